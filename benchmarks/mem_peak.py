"""Peak memory of a command and every process it starts, measured by the kernel (a memory cgroup).

    sudo python benchmarks/mem_peak.py [--limit-gib 8] -- make test-only

The command runs in a new memory cgroup (v1 or v2; needs root or a delegated cgroup). Every child
(pytest, CLI subprocesses, Ray's raylet and workers) is charged to it, and pages shared between
processes (libraries, Ray's object store in /dev/shm) are counted once, unlike a sum of RSS.

Printed at the end:
- peak anonymous + shared memory (what cannot be dropped without swap), sampled every 0.5 s;
- the kernel's own peak (it includes the page cache, which the kernel drops under a limit);
- with --limit-gib, the limit and how many processes the kernel killed for memory (0 means the
  command fitted in it).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

V1 = Path("/sys/fs/cgroup/memory")
V2 = Path("/sys/fs/cgroup")


class Group:
    """A memory cgroup made for one command and removed after it."""

    def __init__(self, name: str, limit: int | None):
        self.v2 = (V2 / "cgroup.controllers").exists() and not V1.is_dir()
        self.path = (V2 if self.v2 else V1) / name
        self.path.mkdir()
        if limit:
            (self.path / ("memory.max" if self.v2 else "memory.limit_in_bytes")).write_text(str(limit))

    def enter(self) -> None:  # in the child, before exec
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def _stat(self) -> dict[str, int]:
        out = {}
        for line in (self.path / "memory.stat").read_text().splitlines():
            key, value = line.split()
            out[key] = int(value)
        return out

    def unreclaimable(self) -> int:
        s = self._stat()
        if self.v2:
            return s.get("anon", 0) + s.get("shmem", 0)
        return s.get("total_rss", 0) + s.get("total_shmem", 0)

    def kernel_peak(self) -> int | None:
        name = "memory.peak" if self.v2 else "memory.max_usage_in_bytes"
        p = self.path / name
        return int(p.read_text()) if p.exists() else None

    def oom_kills(self) -> int:
        text = (self.path / ("memory.events" if self.v2 else "memory.oom_control")).read_text()
        for line in text.splitlines():
            if line.startswith("oom_kill "):
                return int(line.split()[1])
        return 0

    def remove(self) -> None:
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit-gib", type=float, help="run under this memory limit (no swap here: over it, the kernel kills)")
    ap.add_argument("--log", help="append a line per new peak (time, GiB) to this file")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        ap.error("give the command after --, e.g. -- make test-only")
    limit = int(args.limit_gib * 2**30) if args.limit_gib else None
    try:
        group = Group(f"lomo-mem-{os.getpid()}", limit)
    except OSError as e:
        print(f"mem_peak: cannot make a memory cgroup ({e}); run as root or in a delegated cgroup", file=sys.stderr)
        return 2
    peak, peak_at, done = 0, "", threading.Event()
    log = open(args.log, "a") if args.log else None

    def sample() -> None:
        nonlocal peak, peak_at
        while not done.is_set():
            used = group.unreclaimable()
            if used > peak:
                peak, peak_at = used, time.strftime("%H:%M:%S")
                if log and used - getattr(sample, "logged", 0) > 2**28:
                    sample.logged = used
                    log.write(f"{peak_at} {used / 2**30:.2f} GiB\n")
                    log.flush()
            done.wait(0.5)

    thread = threading.Thread(target=sample, daemon=True)
    start = time.time()
    try:
        proc = subprocess.Popen(cmd, preexec_fn=group.enter)
        thread.start()
        rc = proc.wait()
    finally:
        done.set()
        thread.join(timeout=2) if thread.is_alive() else None
    wall = time.time() - start
    kernel = group.kernel_peak()
    kills = group.oom_kills()
    print(f"mem_peak: command exit {rc}, wall {wall:.0f} s, load average {os.getloadavg()[0]:.1f}")
    print(f"mem_peak: peak anonymous + shared memory {peak / 2**30:.2f} GiB at {peak_at} (all processes, counted once)")
    if kernel is not None:
        print(f"mem_peak: kernel peak with page cache {kernel / 2**30:.2f} GiB")
    if limit:
        print(f"mem_peak: limit {args.limit_gib:g} GiB, processes killed for memory: {kills}")
    group.remove()
    return rc


if __name__ == "__main__":
    sys.exit(main())
