"""A small loopback server that speaks enough of the Hugging Face Hub HTTP API for tests.

It serves what huggingface_hub's ``create_repo`` / ``upload_folder`` (preupload, LFS batch +
upload, commit; no Xet: run clients with ``HF_HUB_DISABLE_XET=1``) and ``datasets.load_dataset``
(repo info, tree, paths-info, resolve with ranges) call, for dataset repos, in memory, on
127.0.0.1. It is a test double for the Hub's protocol, not a Hub: no auth checks beyond
"private repos need some token", one branch (``main``), every commit kept as a snapshot.

    server = HubServer().start()
    ... HF_ENDPOINT=server.url ...
    server.fail_next("commit", 2, status=503)   # the next two commits answer 503
    server.stop()
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

_LFS_SUFFIXES = (".parquet", ".png", ".arrow", ".jpg", ".mp4", ".bin")


def git_blob_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Blob:
    content: bytes
    lfs: bool

    @property
    def oid(self) -> str:
        return git_blob_oid(self.content)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: list[tuple[str, dict[str, Blob]]] = field(default_factory=list)

    def snapshot(self, revision: str) -> tuple[str, dict[str, Blob]] | None:
        if revision in ("main", "refs/heads/main"):
            return self.commits[-1]
        for sha, files in self.commits:
            if sha == revision:
                return sha, files
        return None


class HubServer:
    """The server and its in-memory state (repos, LFS blobs, failures to inject, request log)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.repos: dict[str, Repo] = {}
        self.lfs_blobs: dict[str, bytes] = {}
        self.requests: list[str] = []  # "METHOD /path -> status", never headers
        self.auth_seen: list[str] = []  # Authorization header values, for the token tests
        self._failures: dict[str, list[int]] = {}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def fail_next(self, endpoint: str, times: int, status: int = 500) -> None:
        """Answer the next ``times`` calls to ``endpoint`` ("commit", "preupload", "lfs-batch",
        "create") with HTTP ``status``."""
        with self._lock:
            self._failures.setdefault(endpoint, []).extend([status] * times)

    def take_failure(self, endpoint: str) -> int | None:
        with self._lock:
            queue = self._failures.get(endpoint)
            return queue.pop(0) if queue else None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        snap = self.repos[repo_id].snapshot(revision)
        return {path: blob.content for path, blob in snap[1].items()} if snap else {}


def _handler_for(server: HubServer):
    class Handler(_Handler):
        hub = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    # -- plumbing --------------------------------------------------------------------------

    def log_message(self, format, *args):  # noqa: A002 - keep the test output quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False):
        self.send_response(status)
        headers = dict(headers or {})
        headers.setdefault("Content-Type", "application/json")
        headers["Content-Length"] = str(len(body))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if not (head or getattr(self, "_head", False)):
            self.wfile.write(body)
        self.hub.requests.append(f"{self.command} {urlsplit(self.path).path} -> {status}")

    def _json(self, status: int, data, headers: dict[str, str] | None = None):
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None):
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self.headers.get("Authorization")):
            self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
            return None
        return repo

    def _snapshot(self, repo: Repo, revision: str):
        snap = repo.snapshot(unquote(revision))
        if snap is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return snap

    # -- dispatch --------------------------------------------------------------------------

    def do_HEAD(self):
        self._route(head=True)

    def do_GET(self):
        self._route()

    def do_POST(self):
        self._route()

    def do_PUT(self):
        self._route()

    def _route(self, head: bool = False):
        self._head = head
        auth = self.headers.get("Authorization")
        if auth:
            self.hub.auth_seen.append(auth)
        parts = urlsplit(self.path)
        path, query = unquote(parts.path), parse_qs(parts.query)
        routes = [
            ("POST", r"/api/repos/create", self._create),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", r"/datasets/(?P<repo>[^/]+/[^/]+)\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>.+))?", self._info),
            ("GET", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?P<sub>/.*)?", self._tree),
            ("POST", r"/api/datasets/(?P<repo>[^/]+/[^/]+)/paths-info/(?P<rev>[^/]+)", self._paths_info),
            ("GET", r"/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        method = "GET" if head else self.command
        for verb, pattern, fn in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                try:
                    fn(query=query, head=head, **{k: v for k, v in match.groupdict().items()})
                except (BrokenPipeError, ConnectionResetError):
                    pass
                return
        self._error(404, f"not served by the test hub: {self.command} {path}")

    # -- writing ---------------------------------------------------------------------------

    def _create(self, query, head):
        body = json.loads(self._body() or b"{}")
        status = self.hub.take_failure("create")
        if status:
            return self._error(status, "injected failure")
        name, org = body.get("name"), body.get("organization")
        repo_id = f"{org}/{name}" if org else f"user/{name}"
        url = f"{self.hub.url}/datasets/{repo_id}"
        if repo_id in self.hub.repos:
            return self._json(409, {"error": "You already created this dataset repo", "url": url})
        private = body.get("visibility") == "private" or bool(body.get("private"))
        repo = Repo(repo_id, private)
        initial = {".gitattributes": Blob(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", False)}
        repo.commits.append((hashlib.sha1(f"{repo_id}:{time.time_ns()}".encode()).hexdigest(), initial))
        self.hub.repos[repo_id] = repo
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, query, head):
        self._body()
        self._json(200, {"errors": [], "warnings": []})

    def _whoami(self, query, head):
        if not self.headers.get("Authorization"):
            return self._error(401, "Invalid credentials in Authorization header")
        self._json(200, {"type": "user", "name": "test-user", "orgs": [], "auth": {"type": "access_token"}})

    def _preupload(self, repo, rev, query, head):
        body = json.loads(self._body() or b"{}")
        status = self.hub.take_failure("preupload")
        if status:
            return self._error(status, "injected failure")
        r = self._repo(repo)
        if r is None:
            return
        _, files = r.commits[-1]
        answer = []
        for item in body.get("files", []):
            path = item["path"]
            existing = files.get(path)
            answer.append(
                {
                    "path": path,
                    "uploadMode": "lfs" if path.endswith(_LFS_SUFFIXES) else "regular",
                    "shouldIgnore": False,
                    "oid": existing.oid if existing else None,
                }
            )
        self._json(200, {"files": answer, "commitOid": r.commits[-1][0]})

    def _lfs_batch(self, repo, query, head):
        body = json.loads(self._body() or b"{}")
        status = self.hub.take_failure("lfs-batch")
        if status:
            return self._error(status, "injected failure")
        if self._repo(repo) is None:
            return
        objects = []
        for obj in body.get("objects", []):
            entry = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if obj["oid"] not in self.hub.lfs_blobs:
                entry["actions"] = {"upload": {"href": f"{self.hub.url}/lfs-upload/{obj['oid']}", "header": {}}}
            objects.append(entry)
        self._json(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                   {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, oid, query, head):
        content = self._body()
        if hashlib.sha256(content).hexdigest() != oid:
            return self._error(400, "content does not match its sha256")
        self.hub.lfs_blobs[oid] = content
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def _commit(self, repo, rev, query, head):
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        status = self.hub.take_failure("commit")
        if status:
            return self._error(status, "injected failure")
        r = self._repo(repo)
        if r is None:
            return
        files = dict(r.commits[-1][1])
        for item in lines:
            key, value = item.get("key"), item.get("value", {})
            if key == "file":
                files[value["path"]] = Blob(base64.b64decode(value["content"]), False)
            elif key == "lfsFile":
                content = self.hub.lfs_blobs.get(value["oid"])
                if content is None:
                    return self._error(422, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = Blob(content, True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: b for p, b in files.items() if not p.startswith(prefix)}
        sha = hashlib.sha1(json.dumps(sorted((p, b.oid) for p, b in files.items())).encode()
                           + str(time.time_ns()).encode()).hexdigest()
        r.commits.append((sha, files))
        self._json(200, {"commitUrl": f"{self.hub.url}/datasets/{repo}/commit/{sha}", "commitOid": sha,
                         "pullRequestUrl": None, "success": True})

    # -- reading ---------------------------------------------------------------------------

    def _entry(self, path: str, blob: Blob | None) -> dict:
        if blob is None:
            return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}
        entry = {"type": "file", "oid": blob.oid, "size": len(blob.content), "path": path}
        if blob.lfs:
            entry["lfs"] = {"oid": blob.sha256, "size": len(blob.content), "pointerSize": 134}
        return entry

    def _info(self, repo, rev=None, query=None, head=False):
        r = self._repo(repo)
        if r is None:
            return
        snap = self._snapshot(r, rev or "main")
        if snap is None:
            return
        sha, files = snap
        card = {}
        if "README.md" in files:
            text = files["README.md"].content.decode()
            match = re.match(r"^---\n(.*?)\n---", text, re.S)
            if match:
                import yaml

                card = yaml.safe_load(match.group(1)) or {}
        self._json(200, {
            "_id": hashlib.sha1(repo.encode()).hexdigest()[:24], "id": repo, "author": repo.split("/")[0],
            "sha": sha, "private": r.private, "gated": False, "disabled": False, "downloads": 0, "likes": 0,
            "tags": card.get("tags", []), "cardData": card, "lastModified": "2026-01-01T00:00:00.000Z",
            "createdAt": "2026-01-01T00:00:00.000Z",
            "siblings": [{"rfilename": p} for p in sorted(files)],
        })

    def _listing(self, files: dict[str, Blob], prefix: str, recursive: bool) -> list[dict]:
        prefix = prefix.strip("/")
        base = prefix + "/" if prefix else ""
        entries: dict[str, dict] = {}
        for path in sorted(files):
            if not path.startswith(base):
                continue
            rest = path[len(base):].split("/")
            for depth in range(1, len(rest)):
                folder = base + "/".join(rest[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, self._entry(folder, None))
                if not recursive:
                    break
            if recursive or len(rest) == 1:
                entries[path] = self._entry(path, files[path])
        return list(entries.values())

    def _tree(self, repo, rev, sub=None, query=None, head=False):
        r = self._repo(repo)
        if r is None:
            return
        snap = self._snapshot(r, rev)
        if snap is None:
            return
        prefix = (sub or "").strip("/")
        files = snap[1]
        if prefix and prefix not in files and not any(p.startswith(prefix + "/") for p in files):
            return self._error(404, f"{prefix} does not exist on {rev}", "EntryNotFound")
        recursive = (query or {}).get("recursive", ["false"])[0].lower() in ("1", "true")
        self._json(200, self._listing(files, prefix, recursive))

    def _paths_info(self, repo, rev, query=None, head=False):
        raw = self._body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            paths = json.loads(raw or b"{}").get("paths", [])
        else:
            paths = parse_qs(raw.decode()).get("paths", [])
        r = self._repo(repo)
        if r is None:
            return
        snap = self._snapshot(r, rev)
        if snap is None:
            return
        files = snap[1]
        answer = []
        for p in paths:
            p = p.strip("/")
            if p in files:
                answer.append(self._entry(p, files[p]))
            elif p == "" or any(f.startswith(p + "/") for f in files):
                answer.append(self._entry(p, None))
        self._json(200, answer)

    def _resolve(self, repo, rev, file, query=None, head=False):
        r = self._repo(repo)
        if r is None:
            return
        snap = self._snapshot(r, rev)
        if snap is None:
            return
        sha, files = snap
        blob = files.get(file)
        if blob is None:
            return self._error(404, f"Entry not found: {file}", "EntryNotFound")
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": sha,
            "ETag": f'"{blob.oid}"',
            "Accept-Ranges": "bytes",
        }
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(len(blob.content))
        content = blob.content
        status = 200
        match = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "") or "")
        if match and not head:
            start = int(match.group(1)) if match.group(1) else max(0, len(content) - int(match.group(2) or 0))
            end = int(match.group(2)) if match.group(1) and match.group(2) else len(content) - 1
            end = min(end, len(content) - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{len(content)}"
            content, status = content[start:end + 1], 206
        if head:
            self.send_response(200)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(blob.content)))
            self.end_headers()
            self.hub.requests.append(f"HEAD /datasets/{repo}/resolve/{rev}/{file} -> 200")
            return
        self._send(status, content, headers)
