"""Caption policies and `reindex --stale` on the stub stages (test_captions.py runs the real ones, slow)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from imgs import blank
from pixgrep.app import Index, index_paths, reindex
from pixgrep.catalog import Content
from pixgrep.settings import Settings, load_settings
from pixgrep.testing import StubCaptioner, StubOcrEngine, StubStores, text_image


@pytest.fixture
def pics(tmp_path: Path) -> Path:
    d = tmp_path / "pics"
    blank(d / "cat.png", "orange")
    blank(d / "sunset.png", "skyblue")
    text_image(d / "text.png", ["這張圖有很多文字"])
    return d


@pytest.fixture(autouse=True)
def _counts() -> Iterator[None]:
    StubCaptioner.calls.clear()
    StubOcrEngine.images = 0
    yield


def _settings(policy: str = "auto", *, ocr: dict[str, Any] | None = None, **caption: Any) -> Settings:
    return load_settings(
        ocr={"engine": "stub", **(ocr or {})},
        embed={"backend": "stub"},
        caption={"model": "stub-model", "backend": "stub", **caption},
        pipeline={"policy": policy},
    )


def _open(settings: Settings, stores: StubStores) -> Index:
    return Index(settings, ocr_workers=0, store_factory=stores)


def _by_name(ix: Index, d: Path) -> dict[str, Content]:
    out = {}
    for p in sorted(d.iterdir()):
        c = ix.db.content_of(str(p))
        assert c is not None
        out[p.name] = c
    return out


def test_auto_captions_only_images_without_text(home: Path, pics: Path, stub_stores: StubStores) -> None:
    with _open(_settings("auto"), stub_stores) as ix:
        assert index_paths(ix, [str(pics)]).indexed == 3
        assert StubCaptioner.calls == [2]  # one batch, both text-less images
        res = ix.search("cat on a keyboard", limit=3)
        assert res[0].path == str(pics / "cat.png") and res[0].source == "caption"
        text = ix.search("很多文字", limit=3)[0]
        assert text.path == str(pics / "text.png") and text.source == "ocr"
        c = _by_name(ix, pics)
        assert c["cat.png"].source == "caption" and c["cat.png"].versions["caption"] == "stub-captions 1"
        assert "caption" not in c["text.png"].versions


@pytest.mark.parametrize(
    "policy, captioned, ocr_runs",
    [("ocr", 0, True), ("caption", 3, False), ("both", 3, True)],
)
def test_policies(home: Path, pics: Path, stub_stores: StubStores, policy: str, captioned: int, ocr_runs: bool) -> None:
    with _open(_settings(policy), stub_stores) as ix:
        index_paths(ix, [str(pics)])
        rows = list(_by_name(ix, pics).values())
    assert sum(StubCaptioner.calls) == captioned
    assert sum(bool(c.captions) for c in rows) == captioned
    assert any("文字" in c.text for c in rows) == ocr_runs
    assert (StubOcrEngine.images > 0) == ocr_runs
    if policy == "both":
        assert "ocr+caption" in {c.source for c in rows}


def test_reindex_stale_reruns_only_changed_stages(home: Path, pics: Path, stub_stores: StubStores) -> None:
    with _open(_settings("auto"), stub_stores) as ix:
        index_paths(ix, [str(pics)])
        assert StubOcrEngine.images == 3
        r = reindex(ix, stale=True)
        assert (r.ocr, r.caption, r.embed) == (0, 0, 0)

    StubCaptioner.calls.clear()
    with _open(_settings("auto", num_beams=5), stub_stores) as ix:
        r = reindex(ix, stale=True)
        assert (r.ocr, r.caption) == (0, 2)  # only the captioner's settings changed
        assert StubOcrEngine.images == 3 and StubCaptioner.calls == [2]
        assert ix.search("cat on a keyboard", limit=1)[0].path == str(pics / "cat.png")
        assert "beams=5" in _by_name(ix, pics)["cat.png"].versions["caption_cfg"]
        assert reindex(ix, stale=True).caption == 0

    with _open(_settings("auto", ocr={"min_confidence": 0.6}, num_beams=5), stub_stores) as ix:
        r = reindex(ix, stale=True)
        assert r.ocr == 3 and StubOcrEngine.images == 6  # OCR settings changed: OCR re-runs
        assert reindex(ix, stale=True).ocr == 0


def test_captions_no_longer_wanted_are_dropped_without_ocr(home: Path, pics: Path, stub_stores: StubStores) -> None:
    with _open(_settings("auto"), stub_stores) as ix:
        index_paths(ix, [str(pics)])
    with _open(_settings("ocr"), stub_stores) as ix:
        r = reindex(ix, stale=True)
        assert (r.ocr, r.caption) == (0, 2)
        cat = _by_name(ix, pics)["cat.png"]
        assert cat.captions == [] and cat.source == "none" and "caption_cfg" not in cat.versions
    assert StubOcrEngine.images == 3
