"""Two daemons, one archive, one index: PostgreSQL books and queue, a `milvus-lite server` for the vectors.

Both daemons (separate runtime dirs, homes and host names) watch one shared folder, each under its own path
(daemon a the folder itself, daemon b a symlink to it: two mount points of one archive), named ``shared`` in
each one's config (``[roots] shared = <its path>``), so the books hold ``shared:/name`` once per file and each
daemon's CLI shows the files under its own path. 300 corpus memes are dropped, renamed and deleted in it. Each daemon OCRs with ``tests/fleet_daemon.py``'s counting engine (the
OcrEngine Protocol; RapidOCR is tested elsewhere), which logs one line per OCR run, so the test counts runs
per image across both. Then one daemon is killed with ``kill -9`` mid-run and the other takes over its lease.
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import milvusserver
import pytest
from conftest import REPO, corpus_files, wait_for

pytestmark = pytest.mark.slow

# Short, so the kill -9 phase is quick; ten heartbeats, so a loaded machine does not lose a live lease.
LEASE = 10.0


class Fleet:
    """One daemon of the two: its own home, runtime dir, host name and log."""

    def __init__(self, name: str, base: Path, env: dict[str, str], mount: Path) -> None:
        self.name = name
        self.mount = mount  # this daemon's path of the shared folder
        run = base / f"run-{name}"
        run.mkdir(mode=0o700)
        config = base / f"config-{name}" / "pixgrep" / "config.toml"
        config.parent.mkdir(parents=True)
        config.write_text(f'[roots]\nshared = "{mount}"\n\n[[watch.folders]]\npath = "{mount}"\n')
        self.env = {
            **env,
            "PIXGREP_HOME": str(base / f"home-{name}"),
            "XDG_RUNTIME_DIR": str(run),
            "XDG_CONFIG_HOME": str(config.parent.parent),
            "PIXGREP_DAEMON__HOST_NAME": f"host-{name}",
            "FLEET_NAME": name,
        }
        self.socket = run / "pixgrep" / "api.sock"
        self.log = base / f"daemon-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, str(REPO / "tests" / "fleet_daemon.py")], env=self.env, stdout=fh, stderr=fh
            )

    def ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon {self.name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            return bool(self.api("GET", "/v1/health").get("state") == "running")
        except (httpx.HTTPError, OSError):
            return False

    def api(self, method: str, url: str, **kw: Any) -> Any:
        with httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)), base_url="http://d", timeout=60) as c:
            return c.request(method, url, **kw).json()

    def search_paths(self, *extra: str) -> list[str]:
        """The paths ``pixgrep search`` (this daemon's CLI, through its socket) shows for every image."""
        r = subprocess.run(
            [sys.executable, "-m", "pixgrep_cli.main", "search", "meme", "--mode", "keyword", "--limit", "1000",
             "--all", "--json", *extra],
            # The counting OCR engine is registered in the daemon's process only; a search OCRs nothing.
            env={k: v for k, v in self.env.items() if k != "PIXGREP_OCR__ENGINE"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        return [json.loads(line)["path"] for line in r.stdout.splitlines() if line.strip()]  # JSON lines

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)


def _warm_up_digest() -> str:
    from fleet_daemon import digest
    from PIL import Image

    # The daemon OCRs a blank 64x32 white PNG at start (its warm-up) to load the engine.
    return digest(Image.new("RGB", (64, 32), "white"))


def ocr_runs(log: Path) -> list[tuple[str, str]]:
    """(daemon, image digest) of every OCR run on a real image, in order."""
    if not log.exists():
        return []
    warm = _warm_up_digest()
    runs = [tuple(line.split()) for line in log.read_text().splitlines() if line.strip()]
    return [r for r in runs if r[1] != warm]  # type: ignore[misc]


def idle(d: Fleet) -> bool:
    """Nothing queued or in flight in the shared queue, and nothing waiting at this daemon's gate."""
    st = d.api("GET", "/v1/status")
    q = st["daemon"]["queue"]
    return q["pending"] + q["processing"] == 0 and st["daemon"].get("waiting_to_settle", 0) == 0


@pytest.fixture
def memes() -> list[Path]:
    return corpus_files(300, stride=3)


@pytest.fixture
def fleet(memes: list[Path], tmp_path: Path, pg_url: str) -> Iterator[tuple[Path, Fleet, Fleet, Path]]:
    shared = tmp_path / "shared"
    shared.mkdir()
    # Daemon b's mount point of the same folder (the code keeps symlinks in root paths, never resolves them).
    mount_b = tmp_path / "mount-b"
    mount_b.symlink_to(shared, target_is_directory=True)
    ocr_log = tmp_path / "ocr.log"
    with milvusserver.running(tmp_path / "milvus") as uri:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIXGREP_")}
        env.update(
            PIXGREP_DB__URL=pg_url,
            PIXGREP_MILVUS__URI=uri,
            PIXGREP_MILVUS__TIMEOUT="60",
            PIXGREP_OCR__ENGINE="counting",
            PIXGREP_OCR__WORKERS="1",
            PIXGREP_PIPELINE__BATCH_SIZE="4",
            PIXGREP_WATCH__STABLE_SECONDS="0.3",
            PIXGREP_UI__ENABLED="false",
            PIXGREP_DAEMON__HEARTBEAT_SECONDS="1",
            PIXGREP_DAEMON__LEASE_SECONDS=str(LEASE),
            FLEET_OCR_LOG=str(ocr_log),
            FLEET_OCR_SECONDS="0.05",
        )
        a, b = Fleet("a", tmp_path, env, shared), Fleet("b", tmp_path, env, mount_b)
        try:
            # One at a time: the first creates the schema and the collections.
            a.start()
            wait_for(a.ready, 120, "daemon a")
            b.start()
            wait_for(b.ready, 120, "daemon b")
            yield shared, a, b, ocr_log
        finally:
            for d in (a, b):
                d.stop()


def _books(pg_url: str) -> tuple[dict[str, str], set[str]]:
    """(path -> content hash) of every booked path, and the hashes of done contents."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    try:
        with engine.connect() as conn:
            paths = {os.fsdecode(p): h for p, h in conn.execute(sa.text("SELECT path, content_hash FROM paths"))}
            done = set(conn.execute(sa.text("SELECT hash FROM contents WHERE status = 'done'")).scalars())
    finally:
        engine.dispose()
    return paths, done


def _milvus_hashes(uri: str) -> set[str]:
    from pixgrep.store import MilvusStore

    st = MilvusStore(uri, "pixgrep", "use-multilingual-v3", 512)
    try:
        return set(st.segments_per_content())
    finally:
        st.close()


def _assert_index_equals_folder(shared: Path, pg_url: str, milvus_uri: str) -> None:
    # One row per file, booked under the root's name whichever daemon's path it came by.
    files = {f"shared:/{p.name}" for p in shared.iterdir() if p.is_file()}
    paths, done = _books(pg_url)
    assert set(paths) == files
    linked = {h for h in paths.values() if h}
    assert linked <= done, "every file's content is indexed"
    assert _milvus_hashes(milvus_uri) == linked, "Milvus holds exactly the contents of the files in the folder"


def test_two_daemons_share_one_archive(
    memes: list[Path], fleet: tuple[Path, Fleet, Fleet, Path], pg_url: str, tmp_path: Path
) -> None:
    shared, a, b, ocr_log = fleet
    first, second = memes[:200], memes[200:]
    uri = a.env["PIXGREP_MILVUS__URI"]

    # Phase 1: drop 200, rename 40 and delete 30 of them while both daemons work.
    dropped = []
    for i, f in enumerate(first):
        target = shared / f"{f.parent.name}__{f.name}"
        shutil.copyfile(f, target)
        dropped.append(target)
        if i % 50 == 49:
            time.sleep(0.5)
    for p in dropped[:40]:
        p.rename(p.with_name("renamed-" + p.name))
    for p in dropped[40:70]:
        p.unlink()
    wait_for(lambda: idle(a) and idle(b) and len(ocr_runs(ocr_log)) >= 130, 120, "both daemons to drain the queue")
    time.sleep(1.0)
    wait_for(lambda: idle(a) and idle(b), 60, "a quiet queue")

    runs = ocr_runs(ocr_log)
    per_image = collections.Counter(d for _, d in runs)
    twice = {d: n for d, n in per_image.items() if n > 1}
    assert not twice, f"images OCR'd more than once: {twice}"
    by_daemon = collections.Counter(who for who, _ in runs)
    assert by_daemon["a"] > 0 and by_daemon["b"] > 0, f"both daemons did work: {by_daemon}"
    _assert_index_equals_folder(shared, pg_url, uri)
    status = a.api("GET", "/v1/status")
    hosts = {d["host"]: d for d in status["daemons"]}
    assert {"host-a", "host-b"} <= set(hosts) and all(hosts[h]["alive"] for h in ("host-a", "host-b"))
    assert status["named_roots"] == {"shared": {"here": str(shared), "host-b": str(b.mount)}}
    # Search from each daemon's CLI: every image once, under that daemon's own mount point.
    names = {p.name for p in shared.iterdir() if p.is_file()}
    contents = set(_books(pg_url)[0].values())
    for d in (a, b):
        found = d.search_paths()
        assert len(found) == len(contents), d.name  # one result per image, none twice
        assert {os.path.dirname(p) for p in found} == {str(d.mount)} and {os.path.basename(p) for p in found} <= names
        # --in takes this host's path of the root, or the root's name.
        assert sorted(d.search_paths("--in", str(d.mount))) == sorted(found)
        assert sorted(d.search_paths("--in", "shared:")) == sorted(found)

    # Phase 2: drop 100 more and kill -9 daemon a while it holds claims.
    before = len(runs)
    for f in second:
        shutil.copyfile(f, shared / f"{f.parent.name}__{f.name}")
    wait_for(lambda: sum(1 for who, _ in ocr_runs(ocr_log)[before:] if who == "a") >= 5, 60, "daemon a at work")
    assert a.proc is not None
    a.proc.kill()
    a.proc.wait(30)
    killed_at = len(ocr_runs(ocr_log))
    # b reclaims a's claims once their lease runs out, and finishes everything.
    wait_for(lambda: idle(b), 120, "daemon b to take over and drain the queue")
    time.sleep(LEASE)
    wait_for(lambda: idle(b), 60, "a quiet queue")

    runs2 = ocr_runs(ocr_log)
    by_image: dict[str, list[str]] = collections.defaultdict(list)
    for who, d in runs2:
        by_image[d].append(who)
    for d, whos in by_image.items():
        # Only work a held when it died may be done twice: once by a (lost), once by b.
        assert len(whos) == 1 or (whos[:-1] == ["a"] * (len(whos) - 1) and whos[-1] == "b"), (d, whos)
    assert any(who == "b" for who, _ in runs2[killed_at:]), "b took over"
    _assert_index_equals_folder(shared, pg_url, uri)
    daemons = {d["host"]: d for d in b.api("GET", "/v1/status")["daemons"]}
    assert not daemons["host-a"]["alive"] and daemons["host-b"]["alive"]
