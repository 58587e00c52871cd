"""The fault-injection harness: a replayable seed, kill -9 loops, a killable Milvus server, a full disk, an oracle.

Every random choice of the fault suite comes from one seed, printed at the start of each test and settable with
``PIXGREP_FAULT_SEED`` so a failure can be replayed exactly (the timing of the system under test still varies).
When ``PIXGREP_FAULT_REPORT`` names a file, each test appends one JSON line of figures to it (runs, events,
bad-input classes, peak RSS): docs/reliability.md quotes the last full run.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SEED_ENV = "PIXGREP_FAULT_SEED"
REPORT_ENV = "PIXGREP_FAULT_REPORT"
# Read once at import: the tests' `home` fixture clears PIXGREP_* variables before a test runs.
_SEED = os.environ.get(SEED_ENV)
_REPORT = os.environ.get(REPORT_ENV)


def make_rng(test: str) -> tuple[random.Random, int]:
    """A random generator for one test, seeded from PIXGREP_FAULT_SEED or afresh; the seed is printed."""
    seed = int(_SEED) if _SEED else random.SystemRandom().randrange(2**32)
    # On stderr too: pytest shows captured output of a failing test, and `-s` shows it live.
    print(f"{test}: {SEED_ENV}={seed}", file=sys.stderr)
    return random.Random(seed), seed


def record(test: str, **figures: Any) -> None:
    """Append this test's figures to the report file, when one is asked for."""
    path = _REPORT
    if not path:
        return
    line = {"test": test, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(line, ensure_ascii=False) + "\n")


def children_peak_rss_mb() -> float:
    """Peak resident set of the largest child process waited for so far (Linux reports KiB)."""
    return round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)


def rss_mb(pid: int) -> float:
    """The current resident set of a live process, 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return 0.0


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren...)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    parent[int(d)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out: list[int] = []
    frontier = [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p]
        out += kids
        frontier += kids
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# --------------------------------------------------------------------------
# A Milvus server that can be killed and brought back


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MilvusServer:
    """``milvus-lite server`` as a subprocess on a loopback port, with its data in ``data``."""

    def __init__(self, data: Path, port: int | None = None) -> None:
        self.data = data
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data.parent / f"milvus-server-{self.port}.log"

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        exe = Path(sys.executable).parent / "milvus-lite"
        if not exe.exists():
            pytest.skip(f"{exe} is not installed")
        self.data.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [str(exe), "server", "--data-dir", str(self.data), "--host", "127.0.0.1", "--port", str(self.port)],
                stdout=fh,
                stderr=fh,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"milvus-lite server exited with {self.proc.returncode}: {self.log.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop(hard=True)
        raise RuntimeError("milvus-lite server did not start")

    def stop(self, *, hard: bool = False) -> None:
        """SIGKILL (``hard``) or SIGTERM the server and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        self.proc = None

    def __enter__(self) -> MilvusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(hard=True)


# --------------------------------------------------------------------------
# A full disk


@contextlib.contextmanager
def small_tmpfs(path: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (e.g. "6m") on ``path`` for the block; skip when this process can't mount one."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a full-disk test needs root to mount a small tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip() or r.returncode}")
    try:
        yield path
    finally:
        # Lazy: a process of the test still holding a file there must not keep the mount alive.
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path, *, leave: int = 0) -> int:
    """Fill the file system holding ``path`` until at most ``leave`` bytes are free; returns bytes written."""
    written = 0
    i = 0
    while True:
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
        if free <= leave:
            return written
        chunk = min(1 << 20, free - leave)
        try:
            with open(path / f".filler{i}", "wb") as fh:
                fh.write(b"\0" * chunk)
        except OSError:
            return written
        written += chunk
        i += 1


# --------------------------------------------------------------------------
# kill -9 at random moments


@dataclass
class KillLog:
    """What a kill loop did: for the failure message and the report."""

    seed: int
    kills: list[float] = field(default_factory=list)  # seconds after start of each kill
    finished_early: int = 0  # runs that ended before their kill came
    peak_rss_mb: float = 0.0

    def __str__(self) -> str:
        return f"{SEED_ENV}={self.seed} kills at {[round(k, 2) for k in self.kills]}"


def kill_loop(
    start: Callable[[], subprocess.Popen[bytes]],
    rng: random.Random,
    log: KillLog,
    *,
    runs: int,
    ready: Callable[[subprocess.Popen[bytes]], bool] = lambda p: True,
    window: tuple[float, float] = (0.5, 4.0),
) -> None:
    """Start a process ``runs`` times and SIGKILL it a random time (in ``window``) after ``ready`` says so."""
    for _ in range(runs):
        proc = start()
        t0 = time.monotonic()
        try:
            deadline = t0 + 120
            while not ready(proc) and proc.poll() is None:
                if time.monotonic() > deadline:
                    raise AssertionError(f"process never became ready ({log})")
                time.sleep(0.05)
            delay = rng.uniform(*window)
            end = time.monotonic() + delay
            while time.monotonic() < end and proc.poll() is None:
                log.peak_rss_mb = max(log.peak_rss_mb, rss_mb(proc.pid))
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                log.kills.append(time.monotonic() - t0)
            else:
                log.finished_early += 1
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


# --------------------------------------------------------------------------
# The consistency oracle: `pixgrep doctor` (books, Milvus, the local dense index, permissions), plus disk -> books


def books(home: Path) -> tuple[dict[str, str | None], dict[str, tuple[str, str, str]], dict[str, int]]:
    """(path -> content hash, hash -> (status, lines_json, captions_json), queue state -> count), read-only."""
    with contextlib.closing(sqlite3.connect(f"file:{home / 'pixgrep.sqlite'}?mode=ro", uri=True, timeout=30)) as c:
        paths = {os.fsdecode(p): h for p, h in c.execute("SELECT path, content_hash FROM paths")}
        contents = {
            h: (s, lines, caps)
            for h, s, lines, caps in c.execute("SELECT hash, status, lines_json, captions_json FROM contents")
        }
        try:
            queue = dict(c.execute("SELECT state, COUNT(*) FROM queue GROUP BY state").fetchall())
        except sqlite3.OperationalError:
            queue = {}
    return paths, contents, queue


def inconsistencies(settings: Any, *, disk: dict[str, str] | None = None) -> list[str]:
    """What `pixgrep doctor` finds, and files of ``disk`` (path -> content hash) the books lack or hold stale.

    Opens the store: call it while no daemon holds the index.
    """
    from pixgrep.doctor import inconsistencies as doctor

    problems = doctor(settings)
    if disk is not None:
        paths, _, _ = books(settings.home)
        for p, h in disk.items():
            if p not in paths:
                problems.append(f"missing from the books: {p}")
            elif paths[p] != h:
                problems.append(f"stale content for {p}: {paths[p]} != {h}")
    return problems
