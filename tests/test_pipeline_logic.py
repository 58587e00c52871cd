"""The pipeline's logic on the stub stages: books, outcomes, the store's rows, and the order of writes.

Real OCR, USE and Milvus Lite are exercised by test_pipeline.py (slow tier).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from pixgrep.app import Index, index_paths, reindex, status
from pixgrep.catalog import ContentStatus, OutcomeStatus
from pixgrep.segments import build_segments
from pixgrep.stages import OcrLine
from pixgrep.testing import StubStore, text_image


def _store(ix: Index) -> StubStore:
    st = ix.pipeline.store
    assert isinstance(st, StubStore)
    return st


def _hash(ix: Index, path: Path) -> str | None:
    e = ix.db.path_entry(str(path))
    return e.content_hash if e else None


def test_index_and_search(tmp_path: Path, stub_index: Index) -> None:
    d = tmp_path / "pics"
    sad = text_image(d / "sad.png", ["今天不開心", "我想回家"])
    hello = text_image(d / "hello.png", ["Hello pixgrep world"])
    text_image(d / "sky.png", [])
    r = index_paths(stub_index, [str(d)])
    assert (r.indexed, r.failed) == (3, 0)

    top = stub_index.search("今天不开心")[0]  # simplified query, traditional text
    assert top.path == str(sad) and top.source == "ocr"
    assert top.snippet[top.spans[0][0] : top.spans[0][1]] == "今天不開心"
    assert stub_index.search("HELLO WORLD", mode="keyword")[0].path == str(hello)
    assert stub_index.search("pixgrep world", mode="semantic")[0].path == str(hello)

    c = stub_index.db.content_of(str(sad))
    assert c is not None and c.status == ContentStatus.DONE and c.text == "今天不開心\n我想回家"
    assert c.source == "ocr" and c.versions["ocr"] == "stub-ocr 1" and c.versions["embed"].startswith("stub-embedder")
    lines = [OcrLine.from_json(d) for d in c.lines]
    assert _store(stub_index).segments_per_content()[c.hash] == len(build_segments(lines, []))
    sky = stub_index.db.content_of(str(d / "sky.png"))
    assert sky is not None and sky.status == ContentStatus.DONE and sky.source == "none"


def test_incremental_duplicates_moves_deletes(tmp_path: Path, stub_index: Index) -> None:
    ix = stub_index
    d = tmp_path / "pics"
    a = text_image(d / "a.png", ["第一張圖片"])
    text_image(d / "b.png", ["second picture"])
    assert index_paths(ix, [str(d)]).indexed == 2

    r = index_paths(ix, [str(d)])  # unchanged: skipped by stat
    assert (r.unchanged, r.indexed) == (2, 0)

    shutil.copyfile(a, d / "a-copy.png")  # a duplicate is linked, not OCR'd
    r = index_paths(ix, [str(d)])
    assert (r.linked, r.indexed) == (1, 0)
    h = _hash(ix, a)
    assert h is not None and h == _hash(ix, d / "a-copy.png")

    os.rename(a, d / "renamed.png")  # a move is linked, and the old path goes
    r = index_paths(ix, [str(d)])
    # The old name goes when the new one is linked (its bytes are booked there now), or by the walk.
    assert (r.linked, r.indexed) == (1, 0) and _hash(ix, a) is None
    hit = ix.search("第一张图片", mode="keyword")[0]
    assert {hit.path, *hit.other_paths} == {str(d / "a-copy.png"), str(d / "renamed.png")}

    rows = _store(ix).segments_per_content()[h]
    index_paths(ix, [str(d)], force=True)  # upserts are idempotent per content hash
    assert _store(ix).segments_per_content()[h] == rows

    (d / "renamed.png").unlink()
    index_paths(ix, [str(d)])
    assert _store(ix).segments_per_content()[h] == rows  # a path is left
    (d / "a-copy.png").unlink()
    index_paths(ix, [str(d)])
    assert h not in _store(ix).segments_per_content()  # the last path went, so did the vectors
    assert ix.db.content(h) is None and ix.db.orphans() == []


def test_a_rename_through_the_pipeline_needs_no_read(tmp_path: Path, stub_index: Index) -> None:
    a = text_image(tmp_path / "a.png", ["renamed later"])
    index_paths(stub_index, [str(tmp_path)])
    h = _hash(stub_index, a)
    os.rename(a, tmp_path / "b.png")
    assert stub_index.pipeline.move(str(a), str(tmp_path / "b.png"))
    assert stub_index.db.path_entry(str(a)) is None and _hash(stub_index, tmp_path / "b.png") == h
    assert not stub_index.pipeline.move(str(tmp_path / "unknown.png"), str(tmp_path / "b.png"))


def test_changed_file_is_reindexed(tmp_path: Path, stub_index: Index) -> None:
    d = tmp_path / "pics"
    p = text_image(d / "x.png", ["舊的文字"])
    index_paths(stub_index, [str(d)])
    old = _hash(stub_index, p)
    time.sleep(0.01)  # a new mtime
    text_image(p, ["brand new words"])
    index_paths(stub_index, [str(d)])
    assert _hash(stub_index, p) != old
    assert stub_index.search("brand new words", mode="keyword")[0].path == str(p)
    assert stub_index.search("旧的文字", mode="keyword") == []
    assert old not in _store(stub_index).segments_per_content() and stub_index.db.content(old or "") is None


def test_bad_inputs_are_recorded_and_the_run_goes_on(tmp_path: Path, stub_index: Index) -> None:
    ix = stub_index
    d = tmp_path / "bad"
    d.mkdir()
    (d / "zero.jpg").write_bytes(b"")
    good = text_image(d / "good.png", ["好好的圖片"])
    (d / "truncated.png").write_bytes(good.read_bytes()[:60])
    (d / "video.jpg").write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 2000)
    (d / "notes.png").write_text("just some text\n")
    os.symlink(d / "loop.jpg", d / "loop.jpg")
    weird = Path(os.fsdecode(bytes(d) + b"/\xff\xfe-latin1.png"))
    text_image(weird, ["非UTF8檔名"])
    r = index_paths(ix, [str(d)])
    assert r.indexed == 2 and r.failed == 5, r.errors
    reasons = dict(r.errors)
    assert "empty" in reasons[str(d / "zero.jpg")]
    assert "truncated" in reasons[str(d / "truncated.png")] or "corrupt" in reasons[str(d / "truncated.png")]
    assert "MP4" in reasons[str(d / "video.jpg")]
    assert "text" in reasons[str(d / "notes.png")]
    assert "symlink loop" in reasons[str(d / "loop.jpg")]
    assert ix.search("非UTF8檔名", mode="keyword")[0].path == str(weird)

    st = status(ix.db, ix.settings, failed=True)
    assert {f["path"] for f in st["failures"]} >= {str(d / "zero.jpg"), str(d / "video.jpg"), str(d / "loop.jpg")}
    # Permanent failures are not retried while the bytes stay the same; the path error is.
    r2 = index_paths(ix, [str(d)])
    assert r2.indexed == 0 and "symlink loop" in dict(r2.errors)[str(d / "loop.jpg")]


def test_vanished_between_listing_and_reading(tmp_path: Path, stub_index: Index) -> None:
    p = text_image(tmp_path / "v.png", ["會消失"])
    out = stub_index.pipeline.process([str(p) + ".missing", str(p)])
    assert [o.status for o in out] == [OutcomeStatus.FAILED, OutcomeStatus.INDEXED]
    assert "vanished" in (out[0].error or "")


def test_same_bytes_twice_in_one_run_are_analysed_once(tmp_path: Path, stub_index: Index) -> None:
    ix = stub_index
    d = tmp_path / "pics"
    a = text_image(d / "a.png", ["同一張圖"])
    shutil.copyfile(a, d / "b.png")
    (d / "bad1.jpg").write_bytes(b"not an image at all")
    shutil.copyfile(d / "bad1.jpg", d / "bad2.jpg")
    out = {Path(o.path).name: o.status for o in ix.pipeline.process([str(p) for p in sorted(d.iterdir())])}
    assert out == {"a.png": "indexed", "b.png": "linked", "bad1.jpg": "failed", "bad2.jpg": "failed"}
    assert _hash(ix, d / "bad2.jpg") == _hash(ix, d / "bad1.jpg")
    bad = ix.db.content_of(str(d / "bad1.jpg"))
    assert bad is not None and bad.attempts == 1 and bad.settled  # one analysis for both copies
    # Each copy is booked with its own stat, so a second run finds every file unchanged by stat alone.
    for name in ("a.png", "b.png", "bad1.jpg", "bad2.jpg"):
        e = ix.db.path_entry(str(d / name))
        st = (d / name).stat()
        assert e is not None and (e.size, e.mtime_ns, e.inode) == (st.st_size, st.st_mtime_ns, st.st_ino), name
    r = index_paths(ix, [str(d)])
    assert (r.unchanged, r.linked, r.indexed) == (4, 0, 0)


def test_in_dir_finds_an_image_ranked_below_the_first_chunk(tmp_path: Path, stub_index: Index) -> None:
    """Paths are read a chunk of ranked images at a time; --in must read on until it has a hit."""
    for i in range(24):
        text_image(tmp_path / "a" / f"{i}.png", [f"小貓咪睡午覺第{i}天"])
    far = text_image(tmp_path / "b" / "far.png", ["小貓在外面"])
    assert index_paths(stub_index, [str(tmp_path)]).indexed == 25
    ranked = [r.path for r in stub_index.search("小貓咪睡午覺", mode="keyword", limit=30)]
    assert ranked.index(str(far)) >= 20  # beyond the first chunk of max(2 * limit, 20)
    hits = stub_index.search("小貓咪睡午覺", mode="keyword", limit=1, in_dir=str(tmp_path / "b"))
    assert [h.path for h in hits] == [str(far)]


# Writes to the store and the books: the order of catalog.py's docstring --------------------


def test_a_store_outage_while_indexing_leaves_the_content_pending_then_it_is_indexed(
    tmp_path: Path, stub_index: Index
) -> None:
    ix = stub_index
    p = text_image(tmp_path / "pics" / "p.png", ["store was down"])
    _store(ix).down = True
    r = index_paths(ix, [str(tmp_path / "pics")])
    assert (r.retry, r.indexed) == (1, 0) and "down" in r.errors[0][1]
    c = ix.db.content_of(str(p))
    assert c is not None and c.status == ContentStatus.PENDING and c.retryable and not c.settled
    assert ix.db.retry_pending_paths() == [str(p)]
    _store(ix).down = False
    assert ix.search("store was down") == []  # pending contents are not shown
    r = index_paths(ix, [str(tmp_path / "pics")])
    assert r.indexed == 1 and ix.search("store was down")[0].path == str(p)


def test_forgetting_during_a_store_outage_leaves_an_invisible_orphan_that_a_later_run_deletes(
    tmp_path: Path, stub_index: Index
) -> None:
    ix = stub_index
    d = tmp_path / "pics"
    p = text_image(d / "p.png", ["soon deleted"])
    index_paths(ix, [str(d)])
    h = _hash(ix, p)
    assert h is not None
    p.unlink()
    _store(ix).down = True
    assert index_paths(ix, [str(d)]).removed == 1  # the path change is committed first
    assert ix.db.orphans() == [h] and ix.db.content(h) is not None
    _store(ix).down = False
    assert h in _store(ix).segments_per_content()  # its vectors are still there ...
    assert ix.search("soon deleted") == []  # ... but an orphan is never shown
    assert ix.pipeline.purge_orphans() == 1  # vectors first, then the row
    assert ix.db.orphans() == [] and ix.db.content(h) is None and h not in _store(ix).segments_per_content()


def test_a_file_that_changed_bytes_drops_the_old_vectors_after_the_books_move_on(
    tmp_path: Path, stub_index: Index
) -> None:
    ix = stub_index
    p = text_image(tmp_path / "p.png", ["first version"])
    index_paths(ix, [str(tmp_path)])
    old = _hash(ix, p)
    time.sleep(0.01)
    text_image(p, ["second version"])
    st = _store(ix)
    deletes: list[tuple[list[str], str | None]] = []
    real_delete = st.delete

    def delete(hashes: list[str]) -> None:
        # When the store is told to drop the old vectors, the books already point p at the new bytes.
        deletes.append((list(hashes), _hash(ix, p)))
        real_delete(hashes)

    st.delete = delete  # type: ignore[method-assign]
    index_paths(ix, [str(tmp_path)])
    assert deletes == [([old], _hash(ix, p))] and _hash(ix, p) != old
    assert ix.db.content(old or "") is None


# Refresh: the last stages on stored rows ------------------------------------------------------


def test_reindex_embeddings_rebuilds_the_store_from_the_books_without_ocr(tmp_path: Path, stub_index: Index) -> None:
    ix = stub_index
    for i, text in enumerate(["一隻貓", "two dogs", "三隻鳥\nand a fish"]):
        text_image(tmp_path / f"{i}.png", text.split("\n"))
    index_paths(ix, [str(tmp_path)])
    before = _store(ix).segments_per_content()
    versions = {c.hash: c.versions for c in ix.db.contents()}
    r = reindex(ix, embeddings=True)
    assert r.embed == 3 and r.ocr == 0
    assert _store(ix).segments_per_content() == before  # a new, rebuilt store with the same rows
    assert {c.hash: c.versions for c in ix.db.contents()} == versions
    assert ix.search("two dogs")[0].path == str(tmp_path / "1.png")
