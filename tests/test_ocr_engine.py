"""The RapidOCR engine on both ONNX runtimes, and its detector sizing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from imgs import font
from PIL import Image, ImageDraw
from pixgrep.ocr import RapidOcrEngine
from pixgrep.ocrpool import OcrPool, make_ocr
from pixgrep.settings import ConfigError, load_settings

# Real OCR engines.
pytestmark = pytest.mark.slow


def _screenshot(size: tuple[int, int], lines: list[str], font_px: int) -> Image.Image:
    im = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(im)
    f = font(font_px)
    for i, line in enumerate(lines):
        d.text((40, 60 + int(font_px * 1.8) * i), line, font=f, fill="black")
    return im


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_both_runtimes_read_the_same_text(runtime: str) -> None:
    im = _screenshot((900, 300), ["今天不開心", "Hello pixgrep"], 48)
    engine = RapidOcrEngine(runtime=runtime)
    assert runtime in engine.version
    text = " ".join(line.text for line in engine.recognize(im))
    assert "今天不開心" in text and "Hello" in text


def test_auto_runtime_is_openvino_for_throughput_and_onnxruntime_for_memory(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No measurement of this CPU in the cache (ocrtune): the rule without one.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert RapidOcrEngine().runtime == "openvino"
    settings = load_settings()
    assert make_ocr(settings, 1, throughput=True).runtime == "openvino"  # type: ignore[attr-defined]
    assert make_ocr(settings, 1, throughput=False).runtime == "onnxruntime"  # type: ignore[attr-defined]
    forced = load_settings(ocr={"runtime": "openvino"})
    assert make_ocr(forced, 1, throughput=False).runtime == "openvino"  # type: ignore[attr-defined]


def test_detector_input_is_clamped_but_small_text_in_a_big_screenshot_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from rapidocr.ch_ppocr_det.utils import DetPreProcess

    # The detector's input, read as rapidocr's preprocessing hands it to the model.
    shapes: list[tuple[int, ...]] = []
    real_call = DetPreProcess.__call__

    def spy(self: DetPreProcess, img: np.ndarray) -> np.ndarray | None:
        out = real_call(self, img)
        shapes.append(() if out is None else out.shape)
        return out

    monkeypatch.setattr(DetPreProcess, "__call__", spy)
    engine = RapidOcrEngine()  # the defaults: short side into [480, 640]
    engine.recognize(Image.new("RGB", (1080, 2400)))
    assert shapes[-1][2:] == (1408, 640)  # short side 1080 -> 640, long side scaled alike (multiple of 32)
    engine.recognize(Image.new("RGB", (320, 200)))
    assert shapes[-1][2:] == (480, 768)  # small images are upscaled to a 480 short side
    # A phone-sized screenshot with 22 px text: still read after the detector's downscale.
    im = _screenshot((1080, 2400), ["這是一段很小的字", "small text in a screenshot"], 22)
    text = " ".join(line.text for line in engine.recognize(im))
    assert "很小的字" in text and "screenshot" in text


def test_detector_range_is_validated(tmp_path: Path, home: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[ocr]\ndet_limit_side_len = 800\ndet_max_short_side = 640\n")
    with pytest.raises(ConfigError, match="det_max_short_side"):
        load_settings(cfg)


def test_pool_runs_for_throughput_only_with_a_process_per_core(home: Path) -> None:
    cores = os.cpu_count() or 1
    settings = load_settings()
    assert OcrPool(settings, workers=cores).throughput
    assert OcrPool(settings, workers=cores).threads == 1
    one = OcrPool(settings, workers=1)
    assert one.threads == cores and one.throughput == (cores == 1)


def test_an_inline_pool_loads_its_engine_only_when_it_ocrs(tmp_path: Path, home: Path) -> None:
    from imgs import render
    from pixgrep.app import Index

    with Index(load_settings(), ocr_workers=0) as ix:
        assert ix.search("anything") == []
        assert not ix.pipeline.ocr_pool.loaded  # a daemon-less search pays no OCR model load
        ix.pipeline.process([str(render(tmp_path / "a.png", ["第一次辨識"]))])
        assert ix.pipeline.ocr_pool.loaded


def test_openvino_sends_no_telemetry() -> None:
    """OpenVINO's converter falls back to its no-op telemetry stub once pixgrep.ocr is imported.

    With the real openvino_telemetry it spawned a process to post to Google Analytics from each OCR
    process (which also raced cv2's import and printed tracebacks).
    """
    pytest.importorskip("openvino")
    code = "import pixgrep.ocr\nimport openvino.tools.ovc.telemetry_utils as t\nprint(t.tm.__name__)\n"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "openvino.tools.ovc.telemetry_stub"
