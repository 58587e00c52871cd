"""The Milvus store's two collections and the in-memory dense index beside Milvus Lite."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from pixgrep.errors import EmbeddingMismatch
from pixgrep.localdense import LocalDenseIndex
from pixgrep.segments import Segment
from pixgrep.store import MilvusStore
from vecs import DIM
from vecs import segs as _segs
from vecs import unit as _unit


def test_local_index_replace_delete_search_and_reopen(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "v.sqlite"
    ix = LocalDenseIndex(path, DIM)
    a, b = _unit(rng, 4), _unit(rng, 4)
    ix.replace([("a", _segs("a"), a), ("b", _segs("b"), b)])
    assert ix.count() == 8
    hit = ix.search(b[2], 3)[0]
    assert (hit.content_hash, hit.kind, hit.text) == ("b", "line", "b line")
    assert hit.score == pytest.approx(1.0, abs=1e-3)  # float16 codes: cosine to 3 decimals

    # Replacing a content swaps all its rows; the old vectors no longer match.
    a2 = _unit(rng, 2)
    ix.replace([("a", _segs("a")[:2], a2)])
    assert ix.count() == 6 and ix.segments_per_content() == {"a": 2, "b": 4}
    assert all(h.text != "a caption" for h in ix.search(a[3], 10))
    assert ix.search(a2[1], 1)[0].kind == "region"
    ix.delete(["b", "missing"])
    assert ix.count() == 2 and {h.content_hash for h in ix.search(b[0], 10)} == {"a"}
    ix.close()

    again = LocalDenseIndex(path, DIM)  # persisted: a reopen is a bulk read, no Milvus needed
    assert again.count() == 2 and again.segments_per_content() == {"a": 2}
    assert again.search(a2[0], 1)[0].text == "a whole"
    again.clear()
    assert again.count() == 0 and again.search(a2[0], 5) == []
    again.close()


def test_above_ann_rows_an_ivf_index_answers_and_takes_writes(tmp_path: Path) -> None:
    from pixgrep.localdense import ANN_LISTS, ANN_MIN_ROWS

    rng = np.random.default_rng(3)
    path = tmp_path / "v.sqlite"
    n = ANN_MIN_ROWS // 4 + 10  # contents of 4 rows: just above the smallest IVF
    vecs = {f"h{i}": _unit(rng, 4) for i in range(n)}
    ix = LocalDenseIndex(path, DIM)
    ix.replace([(h, _segs(h), v) for h, v in vecs.items()])
    queries = _unit(rng, 20)
    exact = [[(h.content_hash, h.kind) for h in ix.search(q, 10)] for q in queries]
    ix.close()

    assert LocalDenseIndex(path, DIM, ann_rows=n * 5).kind == "flat"  # below its threshold: exact
    every = LocalDenseIndex(path, DIM, ann_rows=1000, ann_probes=ANN_LISTS)
    assert every.kind == "ivf" and every.count() == n * 4
    # Visiting every cell is exhaustive: the same neighbours as the flat scan.
    assert [[(h.content_hash, h.kind) for h in every.search(q, 10)] for q in queries] == exact
    every.close()

    ix = LocalDenseIndex(path, DIM, ann_rows=1000, ann_probes=4)
    assert ix.kind == "ivf"
    for h in ("h1", "h77", f"h{n - 1}"):  # a stored vector's own cell is the first one visited
        hit = ix.search(vecs[h][1], 1)[0]
        assert (hit.content_hash, hit.kind) == (h, "region") and hit.score == pytest.approx(1.0, abs=1e-3)
    ix.delete(["h1"])
    fresh = _unit(rng, 4)
    ix.replace([("h77", _segs("h77")[:2], fresh[:2]), ("new", _segs("new"), fresh)])
    assert ix.count() == n * 4 - 4 - 2 + 4
    assert all(h.content_hash != "h1" for h in ix.search(vecs["h1"][1], 10))
    assert ix.search(fresh[3], 1)[0].content_hash == "new"
    assert ix.search(fresh[1], 1)[0].content_hash in ("h77", "new")  # the same vector, twice
    ix.snapshot()
    ro = LocalDenseIndex(path, DIM, readonly=True, ann_probes=ANN_LISTS)  # the snapshot is the IVF index
    assert ro.search(fresh[3], 1)[0].content_hash == "new" and ro.kind == "ivf"
    ro.close()
    ix.close()


def _store(home: Path, **kw: object) -> MilvusStore:
    return MilvusStore(str(home / "milvus.db"), collection="c", embed_name="m", dim=DIM, **kw)  # type: ignore[arg-type]


@pytest.mark.slow
def test_with_lite_the_parts_live_only_in_the_local_index(home: Path) -> None:
    home.mkdir(parents=True)
    rng = np.random.default_rng(1)
    st = _store(home)
    vecs = _unit(rng, 4)
    st.upsert("h1", _segs("cat"), vecs)
    st.flush()
    kinds = {r["kind"] for r in st.client.query("c", filter='content_hash == "h1"', output_fields=["kind"])}
    assert kinds == {"full", "caption"} and not st.client.has_collection("c_parts")
    # Keyword search reads the documents; dense search finds every kind of segment.
    assert {h.kind for h in st.search_keyword("cat", 10)} == {"full", "caption"}
    assert st.search_keyword("panel", 10) == []  # regions and lines carry no keywords
    assert st.search_dense(vecs[2], 1)[0].kind == "line"
    assert st.count() == 2 and st.local is not None and st.local.count() == 4
    assert st.segments_per_content() == {"h1": 4}
    st.upsert("h1", _segs("dog")[:2], vecs[:2])  # fewer segments now: the old ones are gone everywhere
    assert st.segments_per_content() == {"h1": 2} and st.search_keyword("cat", 10) == []
    st.delete(["h1"])
    assert st.segments_per_content() == {} and st.search_dense(vecs[0], 5) == []
    st.close()


@pytest.mark.slow
def test_local_index_is_repaired_from_milvus_when_it_disagrees(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    home.mkdir(parents=True)
    rng = np.random.default_rng(2)
    st = _store(home)
    v1, v2 = _unit(rng, 4), _unit(rng, 4)
    st.upsert_many([("h1", _segs("one"), v1), ("h2", _segs("two"), v2)])
    assert st.local is not None
    path = st.local.path
    st.close()
    # As if the process died after the Milvus write and before this one (h2), and after a
    # local write whose Milvus write failed (h3).
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM kw WHERE rowid IN (SELECT id FROM seg WHERE content_hash = 'h2')")
        db.execute("DELETE FROM seg WHERE content_hash = 'h2'")
    local = LocalDenseIndex(path, DIM)
    local.replace([("h3", _segs("three")[:3], _unit(rng, 3))])  # one document: the counts differ
    local.replace([("h4", [Segment("line", "ocr", "four", "")], _unit(rng, 1))])  # lines of no document
    local.close()
    with caplog.at_level(logging.WARNING, logger="pixgrep.store"):
        st = _store(home)
    assert "2 contents to drop, 1 to restore" in caplog.text and st.local_rebuilt
    assert st.unembedded == ["h2"]  # its regions and lines are for the pipeline to re-embed
    assert st.segments_per_content() == {"h1": 4, "h2": 2}
    hit = st.search_dense(v2[0], 1)[0]
    assert (hit.content_hash, hit.kind) == ("h2", "full")
    assert {h.content_hash for h in st.search_keyword("two", 10)} == {"h2"}
    assert st.search_keyword("three", 10) == []
    st.close()


@pytest.mark.slow
def test_parts_of_an_older_store_move_into_the_local_index(home: Path) -> None:
    """Two collections in Milvus Lite (the previous layout): the parts are mirrored locally, then dropped."""
    home.mkdir(parents=True)
    rng = np.random.default_rng(5)
    st = _store(home, local_dense=False)
    v1 = _unit(rng, 4)
    st.upsert("h1", _segs("old"), v1)
    st.close()
    st = _store(home)
    assert not st.client.has_collection("c_parts") and st.count() == 2
    assert st.local is not None and st.local.count() == 4
    assert st.search_dense(v1[2], 1)[0].kind == "line"
    assert {h.kind for h in st.search_keyword("old", 10)} == {"full", "caption"}
    st.close()


@pytest.mark.slow
def test_milvus_dense_search_merges_both_collections(home: Path) -> None:
    """The server path's dense search (no in-memory index), on Milvus Lite's engine."""
    home.mkdir(parents=True)
    rng = np.random.default_rng(3)
    st = _store(home, local_dense=False)
    assert st.local is None
    v1, v2 = _unit(rng, 4), _unit(rng, 4)
    st.upsert_many([("h1", _segs("one"), v1), ("h2", _segs("two"), v2)])
    st.flush()
    for vec, want in ((v1[2], ("h1", "line")), (v2[0], ("h2", "full")), (v2[3], ("h2", "caption"))):
        hits = st.search_dense(vec, 5)
        assert (hits[0].content_hash, hits[0].kind) == want
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True) and len(hits) == 5
    st.delete(["h1"])
    st.flush()
    assert {h.content_hash for h in st.search_dense(v1[2], 8)} == {"h2"}
    st.close()


@pytest.mark.slow
def test_a_collection_from_the_one_collection_layout_asks_for_a_reindex(home: Path) -> None:
    from pymilvus import MilvusClient

    home.mkdir(parents=True)
    client = MilvusClient(str(home / "milvus.db"))
    client.create_collection("c", dimension=DIM, properties={"pixgrep.embed_model": "m", "pixgrep.dim": str(DIM)})
    client.close()
    with pytest.raises(EmbeddingMismatch, match="reindex --embeddings"):
        _store(home)
    st = _store(home, recreate=True)  # what `pixgrep reindex --embeddings` does
    assert st.count() == 0
    st.close()


@pytest.mark.slow
def test_a_damaged_in_memory_index_file_is_set_aside_and_rebuilt(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    home.mkdir(parents=True)
    rng = np.random.default_rng(4)
    st = _store(home)
    vecs = _unit(rng, 4)
    st.upsert("h1", _segs("one"), vecs)
    assert st.local is not None
    path = st.local.path
    st.close()
    for leftover in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        leftover.unlink(missing_ok=True)
    path.write_bytes(b"this is not a SQLite database" * 100)
    with caplog.at_level(logging.WARNING, logger="pixgrep.store"):
        st = _store(home)
    assert "unreadable" in caplog.text and "0 contents to drop, 1 to restore" in caplog.text
    assert path.with_name(path.name + ".damaged").exists()
    assert st.search_dense(vecs[0], 1)[0].kind == "full"
    assert st.unembedded == ["h1"]  # the regions and lines were only in the lost file
    st.close()


def test_local_keyword_search_ranks_by_bm25_and_reads_older_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    path = tmp_path / "v.sqlite"
    ix = LocalDenseIndex(path, DIM)
    segs = {
        "a": [Segment("full", "ocr", "cat cat dog", "cat cat dog"), Segment("line", "ocr", "cat", "cat")],
        "b": [Segment("full", "ocr", "dog bird", "dog bird")],
        "c": [Segment("caption", "caption", "a bird", "a bird")],
    }
    ix.replace([(h, s, _unit(rng, len(s))) for h, s in segs.items()])
    assert [h.content_hash for h in ix.search_keyword("cat", 10)] == ["a"]
    assert next((h.content_hash, h.kind) for h in ix.search_keyword("bird dog", 10)) == ("b", "full")
    assert {h.content_hash for h in ix.search_keyword("bird", 10)} == {"b", "c"}
    assert all(h.score > 0 for h in ix.search_keyword("dog", 10))
    # Query syntax is never FTS5's: quotes, operators and punctuation are plain tokens.
    assert (
        ix.search_keyword('"cat OR NEAR( *', 10) == []
        or ix.search_keyword('"cat OR NEAR( *', 10)[0].content_hash == "a"
    )
    assert ix.search_keyword("--- ,,,", 10) == []
    ix.close()
    # A file written before the keyword table existed: its keywords are rebuilt from the text at open.
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM kw")
        db.execute("PRAGMA user_version = 0")
    again = LocalDenseIndex(path, DIM)
    assert [h.content_hash for h in again.search_keyword("cat", 10)] == ["a"]
    again.close()


def test_read_only_local_index_answers_like_the_writer(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    path = tmp_path / "v.sqlite"
    ix = LocalDenseIndex(path, DIM)
    vecs = {h: _unit(rng, 4) for h in "abcdef"}
    ix.replace([(h, _segs(f"w{h}"), v) for h, v in vecs.items()])
    assert not LocalDenseIndex(path, DIM, readonly=True).usable("m")  # no embedder recorded yet
    ix.set_embedder("m")
    ro = LocalDenseIndex(path, DIM, readonly=True)  # while the writer still has it open
    assert ro.usable("m") and not ro.usable("other")
    for q in (vecs["c"][1], vecs["f"][3], _unit(rng, 1)[0]):
        want = [(h.content_hash, h.kind, h.text) for h in ix.search(q, 7)]
        got = [(h.content_hash, h.kind, h.text) for h in ro.search(q, 7)]
        assert got == want
    assert [h.content_hash for h in ro.search_keyword("wd whole", 5)] == [
        h.content_hash for h in ix.search_keyword("wd whole", 5)
    ]
    assert ro.count() == ix.count() == 24
    with pytest.raises(sqlite3.OperationalError):  # it never writes
        ro.set_embedder("x")
    ro.close()
    ix.close()


def test_read_only_search_uses_the_snapshot_only_while_it_is_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    reads: list[str] = []
    real_read = faiss.read_index

    def counting_read(path: str, *args: object) -> object:
        reads.append(path)
        return real_read(path, *args)

    monkeypatch.setattr(faiss, "read_index", counting_read)
    rng = np.random.default_rng(8)
    path = tmp_path / "v.sqlite"
    ix = LocalDenseIndex(path, DIM)
    a = _unit(rng, 4)
    ix.replace([("a", _segs("a"), a)])
    ix.snapshot()  # what the writer's close does
    ro = LocalDenseIndex(path, DIM, readonly=True)
    assert ro.search(a[1], 1)[0].kind == "region"
    assert ro.search(a[2], 1)[0].content_hash == "a"
    assert reads == [str(ix.snapshot_path)]  # the snapshot, one read for every search
    ro.close()
    b = _unit(rng, 4)
    ix.replace([("b", _segs("b"), b)])  # a write after the snapshot: it is stale now
    ro = LocalDenseIndex(path, DIM, readonly=True)
    hit = ro.search(b[3], 1)[0]
    assert (hit.content_hash, hit.kind) == ("b", "caption")
    assert reads == [str(ix.snapshot_path)]  # the rows, not the stale snapshot
    ro.close()
    ix.snapshot_path.write_bytes(b"damaged")
    ix.snapshot()
    ix.snapshot_path.write_bytes(b"damaged after the fact")
    ro = LocalDenseIndex(path, DIM, readonly=True)
    assert ro.search(b[3], 1)[0].content_hash == "b"  # an unreadable snapshot falls back to the rows
    assert len(reads) == 2  # it was current, so it was tried
    ro.close()
    ix.close()
