"""The Milvus server path: HNSW with explicit parameters, ef at search time, FLAT for Lite."""

from __future__ import annotations

from pathlib import Path

import milvusserver
import numpy as np
import pytest
from pixgrep.settings import load_settings
from pixgrep.store import IndexParams, MilvusStore, Segment, open_store

DIM = 16


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _spy_dense_search(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """The search parameters each dense search sends to Milvus, read on the way out."""
    from pymilvus import MilvusClient

    sent: list[dict[str, object]] = []
    real_search = MilvusClient.search

    def spy(self: MilvusClient, *args: object, **kwargs: object) -> object:
        if kwargs.get("anns_field") == "dense":
            sent.append(kwargs["search_params"])  # type: ignore[arg-type]
        return real_search(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MilvusClient, "search", spy)
    return sent


def _segs(n: int) -> list[Segment]:
    return [Segment("full", "ocr", "whole", "whole")] + [Segment("line", "ocr", f"l{i}", "") for i in range(n - 1)]


@pytest.mark.slow
def test_server_gets_hnsw_with_explicit_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pymilvus import MilvusClient

    # `milvus-lite server` builds faiss HNSW with M and efConstruction but does not report them back, so
    # what pixgrep asks for is read on the way in.
    created: dict[str, dict[str, object]] = {}
    real_create = MilvusClient.create_collection

    def spy(self: MilvusClient, name: str, *args: object, **kwargs: object) -> None:
        for ix in kwargs["index_params"]:  # type: ignore[attr-defined]
            if ix.field_name == "dense":
                created[name] = {"index_type": ix.index_type, **ix.get_index_configs()}
        real_create(self, name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(MilvusClient, "create_collection", spy)
    searched = _spy_dense_search(monkeypatch)
    rng = np.random.default_rng(7)
    with milvusserver.running(tmp_path / "milvus") as uri:
        params = IndexParams(hnsw_m=8, hnsw_ef_construction=40, hnsw_ef=32)
        st = MilvusStore(uri, collection="c", embed_name="m", dim=DIM, params=params)
        try:
            assert st.local is None and st.index_type == "HNSW"
            for name in (st.collection, st.parts):
                desc = st.client.describe_index(name, "dense")
                assert desc["index_type"] == "HNSW" and desc["metric_type"] == "IP"
                assert created[name] == {"index_type": "HNSW", "metric_type": "IP", "M": 8, "efConstruction": 40}
            # The search beam is ef, raised to the limit when the limit is larger (each collection searched).
            st.search_dense(_unit(rng, 1)[0], 10)
            assert searched == [{"metric_type": "IP", "params": {"ef": 32}}] * 2
            searched.clear()
            st.search_dense(_unit(rng, 1)[0], 100)
            assert [p["params"] for p in searched] == [{"ef": 100}] * 2
            items = [(f"h{i}", _segs(4), _unit(rng, 4)) for i in range(50)]
            st.upsert_many(items)
            # Read after write: Strong reads see the rows without a flush.
            assert st.count() == 200
            for h, _, vecs in items[:10]:
                hit = st.search_dense(vecs[2], 5)[0]
                assert (hit.content_hash, hit.kind) == (h, "line")
                assert hit.score == pytest.approx(1.0, abs=1e-3)
        finally:
            st.close()
        # Reopened with other settings, the collection keeps (and searches with) the index it has.
        st = MilvusStore(uri, collection="c", embed_name="m", dim=DIM, params=IndexParams(index="FLAT"))
        try:
            assert st.index_type == "HNSW" and st.count() == 200
        finally:
            st.close()


@pytest.mark.slow
def test_settings_choose_the_index(tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home.mkdir(parents=True)
    lite = open_store(load_settings(), embed_name="m", dim=DIM)
    try:
        assert lite.is_lite and lite.index_type == "FLAT" and lite.local is not None
    finally:
        lite.close()
    with milvusserver.running(tmp_path / "milvus") as uri:
        st = open_store(load_settings(milvus={"uri": uri, "index": "FLAT"}), embed_name="m", dim=DIM)
        try:
            assert not st.is_lite and st.index_type == "FLAT" and st.local is None
            searched = _spy_dense_search(monkeypatch)
            st.search_dense(_unit(np.random.default_rng(1), 1)[0], 10)
            assert searched == [{"metric_type": "IP"}] * 2
        finally:
            st.close()
