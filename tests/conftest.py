from __future__ import annotations

import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# gRPC's C core logs keepalive chatter between pymilvus and `milvus-lite server` at exit,
# after pytest's summary line; it must be set before grpc is imported.
os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import pytest
import tqdm

# tqdm's monitor thread outlives every bar and would read as a leak; it only
# adjusts refresh rates.
tqdm.tqdm.monitor_interval = 0

REPO = Path(__file__).resolve().parent.parent
# Tests (and the CLI subprocesses they start) import the checkout they live in, even
# when the venv's editable install points at another working tree.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO / "daemon"), str(REPO / "cli"), *filter(None, [os.environ.get("PYTHONPATH")])]
)
sys.path[:0] = [str(REPO / "daemon"), str(REPO / "cli")]
# The shared corpus sits beside the checkout; PIXGREP_TEST_CORPUS points elsewhere (a worktree, CI).
CORPUS = Path(os.environ.get("PIXGREP_TEST_CORPUS") or REPO.parent / "shared" / "corpus" / "memes")

# PostgreSQL fixtures (pg_server, pg_url) for the tests of the PostgreSQL books.
pytest_plugins = ["pg_fixtures"]

# Threads that libraries start once per process and keep by design: Milvus Lite's
# in-process gRPC server (its serve loop, worker pool and per-collection
# segment threads, which outlive client.close()) and gRPC's pollers.
_ALLOWED_PREFIXES = ("ThreadPoolExecutor-", "grpc", "asyncio_", "QueueFeederThread", "milvus_lite-")
_ALLOWED_SUFFIXES = ("(_serve)",)


def _interesting(t: threading.Thread) -> bool:
    return t.is_alive() and not t.name.startswith(_ALLOWED_PREFIXES) and not t.name.endswith(_ALLOWED_SUFFIXES)


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One cache folder for the session (the embedder's unpacked weights, thumbnails), not ~/.cache."""
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(autouse=True)
def no_thread_leaks() -> Iterator[None]:
    """Fail a test that leaves threads of its own running (daemon threads too)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    leaked: list[threading.Thread] = []
    while time.monotonic() < deadline:
        leaked = [t for t in threading.enumerate() if t not in before and _interesting(t)]
        if not leaked:
            return
        time.sleep(0.05)
    pytest.fail(f"test leaked threads: {[t.name for t in leaked]}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated PIXGREP_HOME, config and runtime dir for one test."""
    h = tmp_path / "home"
    monkeypatch.setenv("PIXGREP_HOME", str(h))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)
    for var in list(os.environ):
        if var.startswith("PIXGREP_") and var != "PIXGREP_HOME":
            monkeypatch.delenv(var)
    return h


def corpus_files(n: int, *, stride: int = 1, offset: int = 0) -> list[Path]:
    if not CORPUS.is_dir():
        pytest.skip(f"corpus not found at {CORPUS} (set PIXGREP_TEST_CORPUS to the memes folder)")
    files = sorted(p for p in CORPUS.rglob("*.jpg"))
    return files[offset::stride][:n]


def copy_corpus(dest: Path, files: list[Path]) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for f in files:
        target = dest / f"{f.parent.name}__{f.name}"
        shutil.copyfile(f, target)
        out.append(target)
    return out


def store_mismatches(contents: dict[str, tuple[str, list[Any], list[str]]], store: Any) -> list[str]:
    """Where the vector stores disagree with the books: Milvus and, beside Lite, the local dense index.

    ``contents``: hash -> (status, lines, captions) from the books. A done content must have exactly the
    rows of its segments in each store; any other hash must have none. [] when everything agrees.
    """
    from pixgrep.segments import build_segments
    from pixgrep.stages import OcrLine

    want = {
        h: len(build_segments([OcrLine.from_json(d) for d in lines], caps))
        for h, (status, lines, caps) in contents.items()
        if status == "done"
    }
    stores = {"Milvus": store.segments_per_content()}
    local = getattr(store, "local", None)
    if local is not None:
        stores["the local dense index"] = local.segments_per_content()
        if local.count() != sum(stores["the local dense index"].values()):
            stores["the local dense index (in memory)"] = {"?": local.count()}
    return [
        f"{name}: content {h} has {per_hash.get(h, 0)} rows, the books want {want.get(h, 0)}"
        for name, per_hash in stores.items()
        for h in sorted(set(want) | set(per_hash))
        if per_hash.get(h, 0) != want.get(h, 0)
    ]


def wait_for(
    cond: Callable[[], Any],
    timeout: float = 60.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
    detail: Callable[[], str] | None = None,
) -> Any:
    """Poll ``cond`` until it returns something truthy, and return that; fail after ``timeout`` seconds.

    The one polling helper of the suite. ``detail`` adds context to the failure (a log tail, a journal).
    """
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            extra = f"\n{detail()}" if detail is not None else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{extra}")
        time.sleep(interval)


@pytest.fixture
def stub_stores() -> Any:
    """The StubStore factory behind ``stub_index`` (the test can take the store down)."""
    from pixgrep.testing import StubStores

    return StubStores()


@pytest.fixture
def stub_index(home: Path, stub_stores: Any) -> Iterator[Any]:
    """An Index on the stub stages: StubOcrEngine (inline), StubEmbedder and a StubStore."""
    from pixgrep.app import Index
    from pixgrep.settings import load_settings

    ix = Index(
        load_settings(ocr={"engine": "stub"}, embed={"backend": "stub"}), ocr_workers=0, store_factory=stub_stores
    )
    yield ix
    ix.close()
