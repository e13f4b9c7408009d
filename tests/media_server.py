"""A local HTTP server on 127.0.0.1 that serves test videos to yt-dlp (its generic extractor
with direct URLs), plus the failures a real download meets:

- ``/media/<name>``: the file, with Content-Type video/mp4 and its Content-Length;
- ``/truncated/<name>``: headers promise the whole file, the body stops at a third and the
  connection closes;
- ``/slow/<name>``: headers promise the whole file, the body comes 1 KiB every half second
  (a download that takes minutes: long enough to interrupt or kill the run during it);
- ``/hang/<name>``: the connection is accepted and never answered;
- anything else: 404.

Every request is recorded (method, path, Cookie header) so tests can count them.
"""

from __future__ import annotations

import http.server
import threading
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class MediaServer:
    files: dict[str, Path]
    requests: list[tuple[str, str, str]] = field(default_factory=list)
    _server: http.server.ThreadingHTTPServer | None = None
    stopping: threading.Event = field(default_factory=threading.Event)

    @property
    def base(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str, kind: str = "media") -> str:
        return f"{self.base}/{kind}/{name}"

    def hits(self, fragment: str) -> int:
        return sum(1 for _, path, _ in self.requests if fragment in path)

    def start(self) -> "MediaServer":
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                owner.requests.append((self.command, self.path, self.headers.get("Cookie") or ""))
                kind, _, name = self.path.lstrip("/").partition("/")
                path = owner.files.get(name.split("?")[0])
                if kind == "hang":
                    while not owner.stopping.wait(0.2):
                        pass
                    return
                if kind not in ("media", "truncated", "slow") or path is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.send_header("Connection", "close")
                    self.end_headers()
                    self.close_connection = True
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "video/mp4")
                self.send_header("Content-Length", str(len(data)))
                if kind == "truncated":
                    self.send_header("Connection", "close")
                self.end_headers()
                if not body:
                    return
                if kind == "slow":
                    for start in range(0, len(data), 1024):
                        if owner.stopping.wait(0.5):
                            return
                        try:
                            self.wfile.write(data[start : start + 1024])
                            self.wfile.flush()
                        except OSError:  # the client went away (interrupted, killed)
                            self.close_connection = True
                            return
                elif kind == "truncated":
                    self.wfile.write(data[: len(data) // 3])
                    self.wfile.flush()
                    self.close_connection = True
                else:
                    self.wfile.write(data)

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="media-server", daemon=True).start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
