import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import wait_for
from imgs import blank, render
from pixgrep.app import Index, index_paths, status
from pixgrep.errors import EmbeddingMismatch
from pixgrep.segments import Segment
from pixgrep.settings import load_settings
from pixgrep.store import MilvusStore

# Real OCR, USE and Milvus Lite (the same logic runs on stubs in test_pipeline_logic.py).
pytestmark = pytest.mark.slow


@pytest.fixture
def index(home: Path) -> Iterator[Index]:
    ix = Index(load_settings(), ocr_workers=0)
    yield ix
    ix.close()


class _Runs:
    """len() is how many images the index's OCR pool has run (its public count)."""

    def __init__(self, index: Index) -> None:
        self.index = index

    def __len__(self) -> int:
        return self.index.pipeline.ocr_pool.runs


@pytest.fixture
def ocr_calls(index: Index) -> _Runs:
    return _Runs(index)


def _rows(index: Index, content_hash: str) -> int:
    st = index.pipeline.store
    n = st.segments_per_content().get(content_hash, 0)
    assert st.local is not None and st.local.count() == st.count(), "in-memory index and Milvus disagree"
    return n


def _hash_of(index: Index, path: Path) -> str | None:
    e = index.db.path_entry(str(path))
    return e.content_hash if e else None


def test_index_and_search_rendered_text(tmp_path: Path, index: Index) -> None:
    d = tmp_path / "pics"
    sad = render(d / "sad.png", ["今天不開心", "我想回家"])
    hello = render(d / "hello.jpg", ["Hello pixgrep world"])
    dog = render(d / "dog.png", ["狗狗知道自己什麼也沒做", "但是他不想冒險"])
    blank(d / "sky.png")
    report = index_paths(index, [str(d)])
    assert report.indexed == 4 and report.failed == 0

    top = index.search("今天不开心")[0]  # simplified query, traditional text
    assert top.path == str(sad) and top.source == "ocr"
    assert top.snippet[top.spans[0][0] : top.spans[0][1]] == "今天不開心"
    assert index.search("HELLO WORLD", mode="keyword")[0].path == str(hello)
    assert index.search("什么也没做", mode="keyword")[0].path == str(dog)
    assert index.search("冒险", mode="semantic")[0].path == str(dog)
    # Results are grouped by image: one row per image, however many segments matched.
    res = index.search("狗狗 冒險 什麼", limit=10)
    assert len({r.content_hash for r in res}) == len(res)
    sky = index.db.content_of(str(d / "sky.png"))
    assert sky is not None and sky.status == "done" and sky.source == "none"
    c = index.db.content(top.content_hash)
    assert c is not None and "rapidocr" in c.versions["ocr"] and "use-multilingual" in c.versions["embed"]
    assert all(0 < line["score"] <= 1 for line in c.lines)


def test_incremental_duplicates_moves_deletes(tmp_path: Path, index: Index, ocr_calls: _Runs) -> None:
    d = tmp_path / "pics"
    a = render(d / "a.png", ["第一張圖片"])
    render(d / "b.png", ["second picture"])
    index_paths(index, [str(d)])
    assert len(ocr_calls) == 2

    r = index_paths(index, [str(d)])  # unchanged: skipped by stat
    assert r.unchanged == 2 and len(ocr_calls) == 2

    shutil.copyfile(a, d / "a-copy.png")  # a duplicate costs no OCR
    r = index_paths(index, [str(d)])
    assert r.linked == 1 and len(ocr_calls) == 2
    h = _hash_of(index, a)
    assert h == _hash_of(index, d / "a-copy.png")

    os.rename(a, d / "renamed.png")  # a move costs no OCR, and the old path goes
    r = index_paths(index, [str(d)])
    # The old name goes when its bytes are linked under the new one (counted as linked, not removed).
    assert r.linked == 1 and len(ocr_calls) == 2 and str(a) not in index.db.paths()
    assert {x.path for x in index.search("第一张图片", mode="keyword")} == {str(d / "a-copy.png")} | {
        str(d / "renamed.png")
    } or index.search("第一张图片", mode="keyword")[0].other_paths

    rows_before = _rows(index, h)  # type: ignore[arg-type]
    assert rows_before >= 1
    index_paths(index, [str(d)], force=True)  # upserts are idempotent per content hash
    assert _rows(index, h) == rows_before  # type: ignore[arg-type]

    (d / "renamed.png").unlink()
    index_paths(index, [str(d)])
    assert _rows(index, h) == rows_before  # type: ignore[arg-type]  # a path is left
    (d / "a-copy.png").unlink()
    r = index_paths(index, [str(d)])
    assert _rows(index, h) == 0  # type: ignore[arg-type]  # the last path went, so did the vectors
    assert index.db.content(h) is None  # type: ignore[arg-type]


def test_changed_file_is_reindexed(tmp_path: Path, index: Index) -> None:
    d = tmp_path / "pics"
    p = render(d / "x.png", ["舊的文字"])
    index_paths(index, [str(d)])
    old = _hash_of(index, p)
    time.sleep(0.01)
    render(p, ["brand new words"])
    index_paths(index, [str(d)])
    assert _hash_of(index, p) != old
    assert index.search("brand new words", mode="keyword")[0].path == str(p)
    assert index.search("旧的文字", mode="keyword") == []


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path: Path, index: Index) -> None:
    d = tmp_path / "bad"
    d.mkdir()
    (d / "zero.jpg").write_bytes(b"")
    good = render(d / "good.jpg", ["好好的圖片"])
    (d / "truncated.jpg").write_bytes(good.read_bytes()[:400])
    (d / "video.jpg").write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 2000)
    (d / "notes.png").write_text("just some text\n")
    os.symlink(d / "loop.jpg", d / "loop.jpg")
    weird = Path(os.fsdecode(bytes(d) + b"/\xff\xfe-latin1.png"))
    render(weird, ["非UTF8檔名"])
    r = index_paths(index, [str(d)])
    assert r.indexed == 2 and r.failed == 5, r.errors
    reasons = dict(r.errors)
    assert "empty" in reasons[str(d / "zero.jpg")]
    assert "truncated" in reasons[str(d / "truncated.jpg")] or "corrupt" in reasons[str(d / "truncated.jpg")]
    assert "MP4" in reasons[str(d / "video.jpg")]
    assert "text" in reasons[str(d / "notes.png")]
    assert "symlink loop" in reasons[str(d / "loop.jpg")]
    assert index.search("非UTF8檔名", mode="keyword")[0].path == str(weird)

    st = status(index.db, index.settings, failed=True)
    assert {f["path"] for f in st["failures"]} >= {str(d / "zero.jpg"), str(d / "video.jpg")}
    # Permanent failures are not retried while the bytes stay the same.
    r2 = index_paths(index, [str(d)])
    assert r2.indexed == 0


def test_vanished_between_listing_and_reading(tmp_path: Path, index: Index) -> None:
    p = render(tmp_path / "v.png", ["會消失"])
    out = index.pipeline.process([str(p) + ".missing", str(p)])
    assert [o.status for o in out] == ["failed", "indexed"]
    assert "vanished" in (out[0].error or "")


def test_ocr_worker_processes(tmp_path: Path, home: Path) -> None:
    d = tmp_path / "pics"
    for i, text in enumerate(["第一", "第二", "第三"]):
        render(d / f"{i}.png", [f"{text}個進程測試"])
    with Index(load_settings(), ocr_workers=2) as ix:
        r = index_paths(ix, [str(d)])
        assert r.indexed == 3
        assert ix.search("第二个进程", mode="keyword")[0].path == str(d / "1.png")


def test_embedding_model_switch_is_refused(home: Path) -> None:
    uri = str(home / "m.db")
    home.mkdir(parents=True)
    st = MilvusStore(uri, collection="c", embed_name="model-a", dim=4)
    st.upsert("h1", [Segment("full", "ocr", "x", "x")], np.ones((1, 4), dtype=np.float32))
    st.close()
    with pytest.raises(EmbeddingMismatch, match="reindex"):
        MilvusStore(uri, collection="c", embed_name="model-b", dim=4)
    with pytest.raises(EmbeddingMismatch):
        MilvusStore(uri, collection="c", embed_name="model-a", dim=8)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_server(data: Path, port: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).parent / "milvus-lite"
    proc = subprocess.Popen(
        [str(exe), "server", "--data-dir", str(data), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("milvus-lite server did not start")


def test_network_milvus_down_then_back(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server path (milvus.uri = http://...) against the real gRPC protocol, and retries."""
    port = _free_port()
    monkeypatch.setenv("PIXGREP_MILVUS__URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("PIXGREP_MILVUS__TIMEOUT", "3")
    server = _start_server(tmp_path / "milvus-data", port)
    d = tmp_path / "pics"
    try:
        with Index(load_settings(), ocr_workers=0) as ix:
            render(d / "one.png", ["伺服器上的第一張"])
            assert index_paths(ix, [str(d)]).indexed == 1
            assert ix.search("服务器上", mode="keyword")[0].path == str(d / "one.png")

            # A clean stop: Milvus Lite's server can leave a torn segment file behind a SIGKILL.
            server.terminate()
            server.wait()
            render(d / "two.png", ["伺服器掛了的第二張"])
            r = index_paths(ix, [str(d)])
            assert r.retry == 1 and "Milvus" in r.errors[0][1]
            c = ix.db.content_of(str(d / "two.png"))
            assert c is not None and c.status == "pending" and c.retryable

            server = _start_server(tmp_path / "milvus-data", port)
            # gRPC reconnects with its own backoff: a later run (the daemon retries) gets through.
            r = wait_for(lambda: (rr := index_paths(ix, [str(d)])).indexed == 1 and rr, 60, "a retry to index two.png")
            assert r.indexed == 1, r.errors
            assert ix.search("挂了的第二", mode="keyword")[0].path == str(d / "two.png")
    finally:
        server.kill()
        server.wait()


def test_tesseract_backend(tmp_path: Path, home: Path) -> None:
    if not shutil.which("tesseract"):
        pytest.skip("tesseract-ocr is not installed")
    d = tmp_path / "pics"
    render(d / "en.png", ["Tesseract reads English"])
    render(d / "zh.png", ["簡體中文識別測試"])
    with Index(load_settings(ocr={"engine": "tesseract"}), ocr_workers=0) as ix:
        assert index_paths(ix, [str(d)]).indexed == 2
        assert ix.search("tesseract reads", mode="keyword")[0].path == str(d / "en.png")
        c = ix.db.content_of(str(d / "zh.png"))
        assert c is not None and "tesseract" in c.versions["ocr"]
        assert "中文" in c.text or "識別" in c.text or "识别" in c.text, c.text


def test_same_bytes_twice_in_one_run_cost_one_ocr(tmp_path: Path, index: Index, ocr_calls: _Runs) -> None:
    d = tmp_path / "pics"
    a = render(d / "a.png", ["同一張圖"])
    shutil.copyfile(a, d / "b.png")
    (d / "bad1.jpg").write_bytes(b"not an image at all")
    shutil.copyfile(d / "bad1.jpg", d / "bad2.jpg")
    r = index_paths(index, [str(d)])
    assert (r.indexed, r.linked, r.failed) == (1, 1, 2)
    assert len(ocr_calls) == 2  # one per distinct content, the bad one included
    assert _hash_of(index, d / "bad2.jpg") == _hash_of(index, d / "bad1.jpg")
    # Each copy is booked with its own stat, so a second run finds every file unchanged by stat alone.
    for name in ("a.png", "b.png", "bad1.jpg", "bad2.jpg"):
        e = index.db.path_entry(str(d / name))
        st = (d / name).stat()
        assert e is not None and (e.size, e.mtime_ns, e.inode) == (st.st_size, st.st_mtime_ns, st.st_ino), name
    r = index_paths(index, [str(d)])
    assert (r.unchanged, r.linked, r.indexed) == (4, 0, 0) and len(ocr_calls) == 2


def test_schema_upgrade_from_version_1(tmp_path: Path) -> None:
    import sqlite3

    from pixgrep import migrate
    from pixgrep.catalog import Catalog

    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.executescript(
        """
        CREATE TABLE meta (key VARCHAR(64) PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE contents (hash VARCHAR(64) PRIMARY KEY, status VARCHAR(16) NOT NULL, source VARCHAR(16),
            text TEXT NOT NULL, lines_json TEXT NOT NULL, width INTEGER, height INTEGER, versions_json TEXT NOT NULL,
            error TEXT, retryable BOOLEAN NOT NULL, attempts INTEGER NOT NULL, created_at FLOAT NOT NULL,
            updated_at FLOAT NOT NULL);
        INSERT INTO contents VALUES ('abc', 'done', 'ocr', 'old text', '[]', 1, 1, '{}', NULL, 0, 1, 0, 0);
        """
    )
    con.commit()
    con.close()
    db = Catalog(path)
    try:
        with db.engine.connect() as conn:
            assert migrate.current(conn) == migrate.HEAD
        c = db.content("abc")
        assert c is not None and c.text == "old text" and c.captions == []
    finally:
        db.close()


def test_in_dir_finds_an_image_ranked_below_the_first_chunk(tmp_path: Path, index: Index) -> None:
    """Paths are read a chunk of ranked images at a time; --in must read on until it has a hit."""
    for i in range(24):
        render(tmp_path / "a" / f"{i}.png", [f"小貓咪睡午覺第{i}天"])
    far = render(tmp_path / "b" / "far.png", ["小貓在外面"])
    assert index_paths(index, [str(tmp_path)]).indexed == 25
    ranked = [r.path for r in index.search("小貓咪睡午覺", mode="keyword", limit=30)]
    assert ranked.index(str(far)) >= 20  # beyond the first chunk of max(2 * limit, 20)
    hits = index.search("小貓咪睡午覺", mode="keyword", limit=1, in_dir=str(tmp_path / "b"))
    assert [h.path for h in hits] == [str(far)]
