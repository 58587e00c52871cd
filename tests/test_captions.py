from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_captioner import FixedCaptioner
from imgs import blank, render
from pixgrep.app import Index, index_paths, reindex
from pixgrep.catalog import Content
from pixgrep.settings import load_settings
from pixgrep.stages import CAPTION

# Real OCR, USE and Milvus Lite (the same logic runs on stubs in test_captions_logic.py).
pytestmark = pytest.mark.slow

CAPTION.register("fixed", "fake_captioner:FixedCaptioner")


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    d = tmp_path / "pics"
    blank(d / "cat.png", "orange")
    blank(d / "sunset.png", "skyblue")
    render(d / "text.png", ["這張圖有很多文字"])
    return d


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    FixedCaptioner.calls.clear()
    yield


def _contents(ix: Index) -> dict[str, Content]:
    return {c.text or c.captions[0] if c.captions else c.text: c for c in ix.db.contents()}


def _settings(policy: str = "auto", **caption: object) -> object:
    return load_settings(caption={"model": "fixed-model", "backend": "fixed", **caption}, pipeline={"policy": policy})


def test_auto_captions_only_images_without_text(home: Path, pics: Path) -> None:
    with Index(_settings("auto"), ocr_workers=0) as ix:  # type: ignore[arg-type]
        assert index_paths(ix, [str(pics)]).indexed == 3
        assert FixedCaptioner.calls == [2]  # one batch, both text-less images
        res = ix.search("cat on a keyboard", limit=3)
        assert res[0].path == str(pics / "cat.png") and res[0].source == "caption"
        # Cross-lingual: a Chinese query finds the English caption through the multilingual embedder.
        assert ix.search("键盘上的猫", mode="semantic", limit=3)[0].path == str(pics / "cat.png")
        assert ix.search("海边的日落", mode="semantic", limit=3)[0].path == str(pics / "sunset.png")
        text = ix.search("很多文字", limit=3)[0]
        assert text.path == str(pics / "text.png") and text.source == "ocr"


@pytest.mark.parametrize(
    "policy, captioned, ocr_runs",
    [("ocr", 0, True), ("caption", 3, False), ("both", 3, True)],
)
def test_policies(home: Path, pics: Path, policy: str, captioned: int, ocr_runs: bool) -> None:
    with Index(_settings(policy), ocr_workers=0) as ix:  # type: ignore[arg-type]
        index_paths(ix, [str(pics)])
        assert sum(FixedCaptioner.calls) == captioned
        rows = ix.db.contents()
        assert sum(bool(c.captions) for c in rows) == captioned
        has_ocr_text = any("文字" in c.text for c in rows)
        assert has_ocr_text == ocr_runs
        sources = {c.source for c in rows}
        if policy == "both":
            assert "ocr+caption" in sources


def test_broken_captioner_is_logged_not_fatal(home: Path, pics: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = load_settings(caption={"model": str(home / "no-such-model"), "backend": "transformers"})
    with Index(s, ocr_workers=0) as ix:
        r = index_paths(ix, [str(pics)])
        assert r.indexed == 3 and r.failed == 0
    assert "captioner unavailable" in caplog.text


def test_reindex_stale_reruns_only_changed_stages(home: Path, pics: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Images OCR'd: each Index's pool counts its own runs.
    with Index(_settings("auto"), ocr_workers=0) as ix:  # type: ignore[arg-type]
        index_paths(ix, [str(pics)])
        assert ix.pipeline.ocr_pool.runs == 3
        r = reindex(ix, stale=True)
        assert (r.ocr, r.caption, r.embed) == (0, 0, 0)

    FixedCaptioner.calls.clear()
    with Index(_settings("auto", num_beams=5), ocr_workers=0) as ix:  # type: ignore[arg-type]
        r = reindex(ix, stale=True)
        assert (r.ocr, r.caption) == (0, 2)  # only the captioner's settings changed
        assert ix.pipeline.ocr_pool.runs == 0 and FixedCaptioner.calls == [2]
        assert ix.search("cat on a keyboard", limit=1)[0].path == str(pics / "cat.png")

    with Index(
        load_settings(
            caption={"model": "fixed-model", "backend": "fixed", "num_beams": 5}, ocr={"min_confidence": 0.6}
        ),
        ocr_workers=0,
    ) as ix:
        r = reindex(ix, stale=True)
        assert r.ocr == 3 and ix.pipeline.ocr_pool.runs == 3  # OCR settings changed: OCR re-runs
        assert reindex(ix, stale=True).ocr == 0


def test_reindex_embeddings_rebuilds_collection(home: Path, pics: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Index(_settings("auto"), ocr_workers=0) as ix:  # type: ignore[arg-type]
        index_paths(ix, [str(pics)])
        before = ix.pipeline.store.count()
        r = reindex(ix, embeddings=True)
        assert r.embed == 3
        ix.pipeline.store.flush()
        assert ix.pipeline.store.count() == before
        assert ix.search("很多文字", limit=1)[0].path == str(pics / "text.png")


torch = pytest.importorskip("torch")


def test_tiny_vit_gpt2_captions_are_indexed_and_found(home: Path, tmp_path: Path) -> None:
    from tiny_models import build_vit_gpt2

    model_dir = build_vit_gpt2(tmp_path / "vit-gpt2")
    d = tmp_path / "photos"
    blank(d / "a.png", "orange")
    blank(d / "b.png", "navy")
    s = load_settings(caption={"model": str(model_dir), "batch_size": 2, "num_beams": 1, "max_new_tokens": 6})
    with Index(s, ocr_workers=0) as ix:
        r = index_paths(ix, [str(d)])
        assert r.indexed == 2
        rows = {c.hash: c for c in ix.db.contents()}
        caps = [c.captions for c in rows.values()]
        assert all(len(c) == 1 and c[0].strip() for c in caps), caps
        assert all(c.source == "caption" and "transformers" in c.versions["caption"] for c in rows.values())
        # Search for the generated caption text finds its image.
        for c in rows.values():
            hits = ix.search(c.captions[0], mode="keyword", limit=5)
            assert c.hash in {h.content_hash for h in hits}
