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

DIM = 8


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _segs(name: str) -> list[Segment]:
    return [
        Segment("full", "ocr", f"{name} whole", f"{name} whole"),
        Segment("region", "ocr", f"{name} panel", f"{name} panel"),
        Segment("line", "ocr", f"{name} line", f"{name} line"),
        Segment("caption", "caption", f"{name} caption", f"{name} caption"),
    ]


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


def _store(home: Path, **kw: object) -> MilvusStore:
    return MilvusStore(str(home / "milvus.db"), collection="c", embed_name="m", dim=DIM, **kw)  # type: ignore[arg-type]


@pytest.mark.slow
def test_documents_and_parts_live_in_two_collections(home: Path) -> None:
    home.mkdir(parents=True)
    rng = np.random.default_rng(1)
    st = _store(home)
    vecs = _unit(rng, 4)
    st.upsert("h1", _segs("cat"), vecs)
    st.flush()
    kinds = {r["kind"] for r in st.client.query("c", filter='content_hash == "h1"', output_fields=["kind"])}
    parts = {r["kind"] for r in st.client.query("c_parts", filter='content_hash == "h1"', output_fields=["kind"])}
    assert kinds == {"full", "caption"} and parts == {"region", "line"}
    # Keyword search reads the documents; dense search finds every kind of segment.
    assert {h.kind for h in st.search_keyword("cat", 10)} == {"full", "caption"}
    assert st.search_dense(vecs[2], 1)[0].kind == "line"
    assert st.count() == 4 and st.local is not None and st.local.count() == 4
    assert st.segments_per_content() == {"h1": 4}
    st.close()


@pytest.mark.slow
def test_in_memory_index_is_rebuilt_from_milvus_when_it_disagrees(home: Path, caplog: pytest.LogCaptureFixture) -> None:
    home.mkdir(parents=True)
    rng = np.random.default_rng(2)
    st = _store(home)
    v1, v2 = _unit(rng, 4), _unit(rng, 4)
    st.upsert_many([("h1", _segs("one"), v1), ("h2", _segs("two"), v2)])
    assert st.local is not None
    path = st.local.path
    st.close()
    # As if the process died after the Milvus write and before this one.
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM seg WHERE content_hash = 'h2'")
    with caplog.at_level(logging.WARNING, logger="pixgrep.store"):
        st = _store(home)
    assert "rebuilding the in-memory vector index from Milvus (8 rows)" in caplog.text
    assert st.local is not None and st.local.count() == 8
    hit = st.search_dense(v2[1], 1)[0]
    assert (hit.content_hash, hit.kind) == ("h2", "region")
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
    assert "unreadable" in caplog.text and "rebuilding the in-memory vector index from Milvus (4 rows)" in caplog.text
    assert path.with_name(path.name + ".damaged").exists()
    assert st.search_dense(vecs[1], 1)[0].kind == "region"
    st.close()
