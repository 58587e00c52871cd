"""Test doubles behind the real Protocols, for the fast test tier.

Like dramatiq's ``StubBroker``: ``StubStore`` is an in-memory ``VectorStore``
(brute-force cosine, a token-overlap keyword leg, an outage switch),
``StubOcrEngine`` an ``OcrEngine`` that reads text the test wrote into the
image's pixels (``text_image``), and ``StubEmbedder`` an ``Embedder`` of hashed
character n-grams (texts that share characters are close). Importing this
module registers them, and ``StubCaptioner``, as ``ocr.engine``, ``embed.backend``
and ``caption.backend`` "stub" (in this process only: use ``ocr_workers=0``);
``StubWholeEmbedder`` (hashed words, synonyms folded: another dimension, another
model) as "stub-whole", for ``embed.whole_backend``.

The real backends stay tested by the slow tier; these stand in where a test
checks pipeline, queue or catalog logic, not OCR or Milvus.
"""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from PIL import Image

from pixgrep.errors import EmbeddingMismatch, StoreUnavailable
from pixgrep.segments import Hit, Segment
from pixgrep.stages import CAPTION, EMBED, OCR, Captioner, Embedder, OcrEngine, OcrLine
from pixgrep.store import DOC_KINDS, StoreFactory, StoreItem, VectorStore

LINE_HEIGHT = 20  # pixels per text line in a text_image, so regions() sees adjacent lines


def text_image(path: Path, lines: Sequence[str], *, size: tuple[int, int] = (240, 120)) -> Path:
    """A PNG whose top pixel row spells ``lines`` (UTF-8, one byte per red value) for StubOcrEngine."""
    data = "\n".join(lines).encode()
    w, h = size
    if len(data) + 1 > w * h:
        raise ValueError("text too long for the image")
    im = Image.new("RGB", size, "white")
    px = im.load()
    assert px is not None
    for i, b in enumerate(data):
        px[i % w, i // w] = (b, 0, 255)
    px[len(data) % w, len(data) // w] = (0, 0, 0)  # end mark
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path, format="PNG")
    return path


class StubOcrEngine:
    """Reads back what ``text_image`` wrote; an image without the marks has no text.

    ``StubOcrEngine.images`` counts the images recognised in this process (tests reset it).
    """

    name = "stub"
    version = "stub-ocr 1"
    images: ClassVar[int] = 0

    def __init__(self, **_: Any) -> None:
        pass

    def recognize(self, image: Image.Image) -> list[OcrLine]:
        StubOcrEngine.images += 1
        im = image.convert("RGB")
        w, h = im.size
        px = im.load()
        assert px is not None
        data = bytearray()
        for i in range(w * h):
            r, g, b = px[i % w, i // w]  # type: ignore[misc]
            if (g, b) != (0, 255) or r == 0:
                break
            data.append(r)
        text = data.decode(errors="replace")
        lines = [t for t in text.split("\n") if t] if text else []
        return [
            OcrLine(t, 0.99, (0.0, float(LINE_HEIGHT * i), float(w), float(LINE_HEIGHT * (i + 1) - 4)))
            for i, t in enumerate(lines)
        ]


class StubCaptioner:
    """Captions by the colour of pixel (5, 5): ``CAPTIONS``, else "a picture".

    ``StubCaptioner.calls`` records each batch's size (tests reset it).
    """

    name = "stub-captions"
    version = "stub-captions 1"
    CAPTIONS: ClassVar[dict[tuple[int, int, int], str]] = {
        (255, 165, 0): "an orange cat sleeping on a computer keyboard",
        (135, 206, 235): "a sunset over the sea at the beach",
    }
    calls: ClassVar[list[int]] = []

    def __init__(self, **_: Any) -> None:
        pass

    def caption(self, images: Sequence[Image.Image]) -> list[list[str]]:
        StubCaptioner.calls.append(len(images))
        return [[self.CAPTIONS.get(im.convert("RGB").getpixel((5, 5)), "a picture")] for im in images]  # type: ignore[call-overload,arg-type]


def _unit_rows(out: np.ndarray) -> np.ndarray:
    """L2-normalise each row in place; an all-zero row (no features) becomes a fixed unit vector."""
    norms = np.linalg.norm(out, axis=1)
    out[norms == 0, 0] = 1.0
    norms[norms == 0] = 1.0
    out /= norms[:, None]
    return out


class StubEmbedder:
    """Hashed character unigrams and bigrams, L2-normalised: shared characters mean a high cosine."""

    name = "stub-embedder"
    version = "1"

    def __init__(self, *, dim: int = 64, **_: Any) -> None:
        self.dim = dim
        self.calls = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, t in enumerate(texts):
            t = t.lower()
            for gram in [*t, *(t[i : i + 2] for i in range(len(t) - 1))]:
                if not gram.isspace():
                    out[row, zlib.crc32(gram.encode()) % self.dim] += 1.0
        return _unit_rows(out)


class StubWholeEmbedder:
    """Hashed words, with the words of ``SYNONYMS`` folded to one: a second model that knows
    "kitten" means "cat" where the character n-grams of ``StubEmbedder`` do not."""

    name = "stub-whole"
    dim = 48
    version = "1"
    SYNONYMS: ClassVar[dict[str, str]] = {"kitten": "cat", "feline": "cat", "sleepy": "tired", "exhausted": "tired"}

    def __init__(self, **_: Any) -> None:
        self.calls: list[int] = []

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, t in enumerate(texts):
            for w in t.lower().split():
                w = self.SYNONYMS.get(w, w)
                out[row, zlib.crc32(w.encode()) % self.dim] += 1.0
        return _unit_rows(out)


class StubStore:
    """An in-memory ``VectorStore``. Set ``down`` to make every call raise ``StoreUnavailable``.

    ``whole``: (name, dim) of a whole-text model; the documents then keep its vectors too."""

    def __init__(
        self, embed_name: str = StubEmbedder.name, dim: int = 64, whole: tuple[str, int] | None = None
    ) -> None:
        self.embed_name = embed_name
        self.dim = dim
        self.whole = whole
        self.whole_rows: dict[str, np.ndarray] = {}
        self.rows: dict[str, tuple[list[Segment], np.ndarray]] = {}
        self.down = False
        self.flushes = 0
        self.unflushed = 0
        self.closed = False
        self.unembedded: list[str] = []  # set it to have the pipeline re-embed those after opening
        self._lock = threading.Lock()

    def _check(self, what: str) -> None:
        if self.down:
            raise StoreUnavailable(f"stub store {what} failed: it is down")

    def upsert(self, content_hash: str, segments: Sequence[Segment], vectors: np.ndarray) -> None:
        self.upsert_many([(content_hash, segments, vectors)])

    def upsert_many(self, items: Sequence[StoreItem], whole: Sequence[np.ndarray] | None = None) -> None:
        self._check("upsert")
        if (whole is not None) != (self.whole is not None):
            raise ValueError("whole-text vectors given to a store without a whole-text model, or missing")
        with self._lock:
            for n, (h, segs, vecs) in enumerate(items):
                vecs = np.asarray(vecs, dtype=np.float32).reshape(len(segs), -1) if segs else np.zeros((0, self.dim))
                self.rows[h] = (list(segs), vecs)
                self.unflushed += len(segs)
                if whole is not None:
                    docs = sum(seg.kind in DOC_KINDS for seg in segs)
                    w = np.asarray(whole[n], dtype=np.float32).reshape(docs, -1) if docs else np.zeros((0, 1))
                    self.whole_rows[h] = w

    def delete(self, hashes: Sequence[str]) -> None:
        self._check("delete")
        with self._lock:
            for h in hashes:
                self.unflushed += len(self.rows.pop(h, ([], None))[0])
                self.whole_rows.pop(h, None)

    def purge(self, hashes: Sequence[str]) -> None:
        self.delete(hashes)

    def search_dense(self, vector: np.ndarray, limit: int) -> list[Hit]:
        self._check("search")
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        with self._lock:
            hits = [
                Hit(h, seg.kind, seg.source, seg.text, float(vec @ q))
                for h, (segs, vecs) in self.rows.items()
                for seg, vec in zip(segs, vecs, strict=True)
            ]
        return sorted(hits, key=lambda x: -x.score)[:limit]

    def search_whole(self, vector: np.ndarray, limit: int) -> list[Hit]:
        self._check("search")
        q = np.asarray(vector, dtype=np.float32).reshape(-1)
        with self._lock:
            hits = [
                Hit(h, seg.kind, seg.source, seg.text, float(vec @ q))
                for h, w in self.whole_rows.items()
                for seg, vec in zip([s for s in self.rows[h][0] if s.kind in DOC_KINDS], w, strict=True)
            ]
        return sorted(hits, key=lambda x: -x.score)[:limit]

    def search_keyword(self, tokens: str, limit: int) -> list[Hit]:
        """Score = how many query tokens a whole-text or caption segment holds (BM25's candidates)."""
        self._check("keyword search")
        want = set(tokens.split())
        with self._lock:
            hits = [
                Hit(h, seg.kind, seg.source, seg.text, float(len(want & set(seg.kw.split()))))
                for h, (segs, _) in self.rows.items()
                for seg in segs
                if seg.kind in DOC_KINDS
            ]
        return sorted((x for x in hits if x.score > 0), key=lambda x: -x.score)[:limit]

    def flush(self) -> None:
        # Like MilvusStore: a flush with nothing written calls nothing (so an outage goes unseen).
        if self.unflushed:
            self._check("flush")
            self.flushes += 1
            self.unflushed = 0

    def count(self) -> int:
        self._check("count")
        with self._lock:
            return sum(len(segs) for segs, _ in self.rows.values())

    def segments_per_content(self) -> dict[str, int]:
        with self._lock:
            return {h: len(segs) for h, (segs, _) in self.rows.items()}

    def probe(self) -> None:
        self._check("probe")

    def close(self) -> None:
        self.closed = True


class StubStores:
    """A ``StoreFactory``: one ``StubStore`` per collection that outlives close and reopen, like Milvus data."""

    def __init__(self) -> None:
        self.stores: dict[str, StubStore] = {}

    def __call__(self, settings: Any, *, embed_name: str, dim: int, recreate: bool = False) -> StubStore:
        from pixgrep.store import whole_identity

        name = settings.milvus.collection
        st = self.stores.get(name)
        whole = whole_identity(settings)
        if st is not None and not recreate and (st.embed_name, st.dim, st.whole) != (embed_name, dim, whole):
            raise EmbeddingMismatch(
                f"collection {name!r} holds vectors of {st.embed_name} (dim {st.dim}, whole texts {st.whole}), "
                f"but the embedder is now {embed_name} (dim {dim}, whole texts {whole})"
            )
        if st is None or recreate:
            st = self.stores[name] = StubStore(embed_name, dim, whole)
        st.closed = False
        return st


OCR.register("stub", "pixgrep.testing:StubOcrEngine")
EMBED.register("stub", "pixgrep.testing:StubEmbedder")
EMBED.register("stub-whole", "pixgrep.testing:StubWholeEmbedder")
CAPTION.register("stub", "pixgrep.testing:StubCaptioner")

if TYPE_CHECKING:  # the stubs stand behind the real Protocols (mypy checks it)
    _store: VectorStore = StubStore()
    _factory: StoreFactory = StubStores()
    _ocr: OcrEngine = StubOcrEngine()
    _embedder: Embedder = StubEmbedder()
    _whole: Embedder = StubWholeEmbedder()
    _captioner: Captioner = StubCaptioner()
