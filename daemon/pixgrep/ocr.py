"""OCR backends: RapidOCR (PP-OCRv6, bundled, default) and Tesseract."""

from __future__ import annotations

import logging
import os
import sys
from importlib import metadata
from typing import Any

import numpy as np
from PIL import Image

from pixgrep.stages import BackendUnavailable, OcrLine

log = logging.getLogger("pixgrep.ocr")

# OpenVINO's model converter (which rapidocr's OpenVINO engine reaches) sends usage telemetry to
# Google Analytics from a spawned process, unless `openvino_telemetry` cannot be imported: then it
# uses its own no-op stub. pixgrep sends nothing off the machine; and that spawned sender, started
# while the OCR process was importing cv2 (whose loader briefly puts its own folder on sys.path),
# died importing cv2's `typing` package for the stdlib's and printed tracebacks.
sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "?"


def _openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    except Exception as e:  # a broken optional runtime is logged, not fatal
        log.warning("openvino is installed but does not import (%s); OCR runs on onnxruntime", e)
        return False
    return True


def resolve_runtime(runtime: str, *, throughput: bool) -> str:
    """The runtime rapidocr runs on: the one place ``ocr.runtime = "auto"`` is decided.

    auto: onnxruntime when the pool does not run for throughput (the daemon), since OpenVINO
    holds 700+ MB per OCR process against 160 MB (150 memes, bench/RESULTS.md), and when
    openvino does not import. For throughput (``pixgrep index``, a process per core) the
    faster of the two on this CPU, as measured once (``ocrtune``: the pool measures before
    its processes start); without a measurement OpenVINO, which ran the same PP-OCRv6 graphs
    1.5x faster with the same text on the AMD EPYC this was tuned on.
    """
    if runtime == "auto":
        if not throughput or not _openvino_available():
            return "onnxruntime"
        from pixgrep.ocrtune import throughput_runtime

        return throughput_runtime(calibrate=False) or "openvino"
    if runtime == "openvino" and not _openvino_available():
        raise BackendUnavailable("ocr.runtime = openvino, but openvino is not importable: pip install openvino")
    return runtime


class RapidOcrEngine:
    name = "rapidocr"

    def __init__(
        self,
        min_confidence: float = 0.5,
        threads: int = 1,
        det_limit_side_len: int = 480,
        det_max_short_side: int = 640,
        runtime: str = "auto",
        **_: Any,
    ) -> None:
        try:
            from rapidocr import EngineType, RapidOCR
        except ImportError as e:
            raise BackendUnavailable(f"rapidocr is not importable: {e}") from e
        # Built by itself (not through the pool), the engine is there to go fast.
        runtime = resolve_runtime(runtime, throughput=True)
        params: dict[str, Any] = {
            "Global.log_level": "error",
            "Det.limit_type": "min",
            "Det.limit_side_len": det_limit_side_len,
            "Rec.rec_batch_num": 12,
        }
        # One engine per OCR process with `threads` cores: pixgrep parallelises across processes.
        if runtime == "openvino":
            engine = EngineType.OPENVINO
            for stage in ("Det", "Cls", "Rec"):
                params[f"{stage}.engine_type"] = engine
            params["EngineConfig.openvino.inference_num_threads"] = threads
            # OpenVINO pins its threads to cores by default; two OCR processes would then
            # share the same core and leave the other idle.
            params["EngineConfig.openvino.enable_cpu_pinning"] = False
        else:
            params["EngineConfig.onnxruntime.intra_op_num_threads"] = threads
            params["EngineConfig.onnxruntime.inter_op_num_threads"] = 1
        logging.getLogger("RapidOCR").setLevel(logging.WARNING)
        self._engine = RapidOCR(params=params)
        self._clamp_detector(det_limit_side_len, det_max_short_side)
        self.min_confidence = min_confidence
        self.runtime = runtime
        self.version = f"rapidocr {_version('rapidocr')} PP-OCRv6 det/rec small ({runtime} {_version(runtime)})"

    def _clamp_detector(self, lo: int, hi: int) -> None:
        # rapidocr's "min" limit only upscales: a 1080 px meme is detected at full size,
        # which costs much more than a 640 px pass and finds the same boxes. Clamp the detector's
        # input short side to [lo, hi]; recognition still reads full-resolution crops.
        try:
            from rapidocr.ch_ppocr_det.utils import DetPreProcess

            det = self._engine._load_det_model()
        except (ImportError, AttributeError) as e:
            log.warning("rapidocr internals changed (%s): detecting at rapidocr's own sizes", e)
            return

        class ClampedDetPreProcess(DetPreProcess):
            def resize(self, img: np.ndarray) -> np.ndarray | None:
                import cv2

                h, w = img.shape[:2]
                short = min(h, w)
                ratio = lo / short if short < lo else hi / short if short > hi else 1.0
                size = (max(32, round(w * ratio / 32) * 32), max(32, round(h * ratio / 32) * 32))
                return cv2.resize(img, size)

        det.get_preprocess = lambda: ClampedDetPreProcess(lo, "min", det.mean, det.std)

    def recognize(self, image: Image.Image) -> list[OcrLine]:
        out: Any = self._engine(np.asarray(image)[:, :, ::-1])  # RapidOCR expects BGR arrays
        if out.txts is None or out.boxes is None or out.scores is None:
            return []
        lines = []
        for text, score, box in zip(out.txts, out.scores, out.boxes, strict=False):
            text = text.strip()
            if not text or float(score) < self.min_confidence:
                continue
            xs = [float(p[0]) for p in box]
            ys = [float(p[1]) for p in box]
            lines.append(OcrLine(text, float(score), (min(xs), min(ys), max(xs), max(ys))))
        return lines


class TesseractEngine:
    name = "tesseract"

    def __init__(self, languages: str = "chi_sim+chi_tra+eng", min_confidence: float = 0.5, **_: Any) -> None:
        try:
            import pytesseract
        except ImportError as e:
            raise BackendUnavailable("tesseract backend needs: pip install 'pixgrep[tesseract]'") from e
        # Tesseract's OpenMP threads fight the per-core worker processes.
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")
        try:
            have = set(pytesseract.get_languages(config=""))
            tess_version = str(pytesseract.get_tesseract_version())
        except pytesseract.TesseractNotFoundError as e:
            raise BackendUnavailable("tesseract binary not found: apt-get install tesseract-ocr") from e
        missing = [lang for lang in languages.split("+") if lang not in have]
        if missing:
            raise BackendUnavailable(
                f"tesseract lacks language data {', '.join(missing)} (ocr.languages); "
                f"apt-get install {' '.join('tesseract-ocr-' + m.replace('_', '-') for m in missing)}"
            )
        self._tess = pytesseract
        self.languages = languages
        self.min_confidence = min_confidence
        self.version = f"tesseract {tess_version.split()[0]} {languages}"

    def recognize(self, image: Image.Image) -> list[OcrLine]:
        data = self._tess.image_to_data(image, lang=self.languages, output_type=self._tess.Output.DICT)
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, word in enumerate(data["text"]):
            if word.strip() and float(data["conf"][i]) >= 0:
                key = (data["block_num"][i], data["par_num"][i], data["line_num"][i])
                groups.setdefault(key, []).append(i)
        lines = [_tesseract_line(data, idx) for idx in groups.values()]
        return [ln for ln in lines if ln.score >= self.min_confidence]


def _tesseract_line(data: dict[str, list[Any]], idx: list[int]) -> OcrLine:
    """One OCR line from the words at ``idx`` of tesseract's image_to_data table."""
    # Tesseract splits CJK into one "word" per character; join those without spaces.
    text = ""
    for w in (data["text"][i].strip() for i in idx):
        if text and not (_cjk(text[-1]) and _cjk(w[0])):
            text += " "
        text += w
    score = float(np.mean([float(data["conf"][i]) for i in idx])) / 100.0
    x0 = min(data["left"][i] for i in idx)
    y0 = min(data["top"][i] for i in idx)
    x1 = max(data["left"][i] + data["width"][i] for i in idx)
    y1 = max(data["top"][i] + data["height"][i] for i in idx)
    return OcrLine(text, score, (float(x0), float(y0), float(x1), float(y1)))


def _cjk(ch: str) -> bool:
    return "\u2e80" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\uff00" <= ch <= "\uffef"
