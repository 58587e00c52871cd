"""The pipeline's typed batches and the stages between them.

    prepare ─▶ Pending ─OCR─▶ Analysed ─caption─▶ Analysed ─segment─▶ Segmented ─embed─▶ Embedded ─write─▶ store

``Pipeline.process`` runs every stage on new files; ``Pipeline.refresh`` builds
``Analysed`` items from the books (no OCR) and runs the same last stages. Each
type is complete when it is made: nothing is filled in later.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from pixgrep import images
from pixgrep.catalog import Link
from pixgrep.errors import PermanentError
from pixgrep.ocrpool import Analysis
from pixgrep.segments import Segment, build_segments
from pixgrep.stages import Captioner, Embedder
from pixgrep.store import DOC_KINDS, VectorStore

log = logging.getLogger("pixgrep.pipeline")


def link_of(path: str, root: str | None, fb: images.FileBytes) -> Link:
    return Link(path, root, fb.digest, fb.size, fb.mtime_ns, fb.inode)


@dataclass(frozen=True)
class Pending:
    """A file read and hashed whose bytes the books do not know yet (prepare's output)."""

    path: str
    root: str | None
    fb: images.FileBytes
    # Other paths with the same bytes seen in this run: linked with this one,
    # each with its own root and stat (its bytes dropped).
    dups: dict[str, tuple[str | None, images.FileBytes]] = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return self.fb.digest

    def paths(self) -> list[str]:
        return [self.path, *self.dups]

    def links(self) -> list[Link]:
        """This path and its duplicates, as the books link them to the bytes."""
        return [link_of(self.path, self.root, self.fb)] + [
            link_of(dup, root, fb) for dup, (root, fb) in self.dups.items()
        ]

    def add_dup(self, path: str, root: str | None, fb: images.FileBytes) -> None:
        self.dups[path] = (root, dataclasses.replace(fb, data=b""))


@dataclass(frozen=True)
class Analysed:
    """OCR done (or read back from the books); captions, if the caption stage ran."""

    item: Pending
    analysis: Analysis
    captions: tuple[str, ...] = ()
    # The caption stage chose this item (whatever it produced): its versions record the captioner.
    captioned: bool = False

    @property
    def digest(self) -> str:
        return self.analysis.digest

    @property
    def ocr_chars(self) -> int:
        return sum(len(ln.text) for ln in self.analysis.lines)

    @property
    def source(self) -> str:
        """What the text came from: ocr, caption, ocr+caption or none."""
        on = (("ocr", bool(self.analysis.lines)), ("caption", bool(self.captions)))
        return "+".join(x for x, yes in on if yes) or "none"


@dataclass(frozen=True)
class Segmented:
    analysed: Analysed
    segments: list[Segment]


@dataclass(frozen=True)
class Embedded:
    segmented: Segmented
    vectors: np.ndarray  # one row per segment
    # With a whole-text model (embed.whole_backend): one row per whole text or caption, in segment order.
    whole: np.ndarray | None = None

    def store_item(self) -> tuple[str, Sequence[Segment], np.ndarray]:
        return (self.segmented.analysed.digest, self.segmented.segments, self.vectors)


# --------------------------------------------------------------------------
# Stages


def caption(
    batch: Sequence[Analysed],
    captioner: Captioner | None,
    *,
    wants: Callable[[int], bool],
    load: Callable[[Analysed], bytes | None],
    max_megapixels: float,
) -> list[Analysed]:
    """Caption the items ``wants`` chooses (by OCR'd characters); new captions go first.

    ``load`` gives an item's bytes (None: skip it). A captioner error is logged and
    the batch goes on without captions: the stage is optional.
    """
    chosen = [a for a in batch if wants(a.ocr_chars)] if captioner is not None else []
    ims, ok = [], []
    for a in chosen:
        data = load(a)
        if not data:
            continue
        try:
            ims.append(images.decode(data, max_megapixels=max_megapixels))
            ok.append(a)
        except PermanentError:
            continue
    new: dict[int, list[str]] = {}
    if ims and captioner is not None:
        try:
            new = {id(a): list(c) for a, c in zip(ok, captioner.caption(ims), strict=True)}
        except Exception as e:
            log.error("captioning a batch of %d failed: %s", len(ims), e)
    picked = {id(a) for a in chosen}
    return [
        dataclasses.replace(a, captions=(*new.get(id(a), []), *a.captions), captioned=id(a) in picked)
        if id(a) in picked
        else a
        for a in batch
    ]


def segment(batch: Sequence[Analysed]) -> list[Segmented]:
    return [Segmented(a, build_segments(a.analysis.lines, a.captions)) for a in batch]


def embed(batch: Sequence[Segmented], embedder: Embedder, whole: Embedder | None = None) -> list[Embedded]:
    """One embedder call for the whole batch; rows split back per item. ``whole``: a second
    model for the whole texts and captions only (one more call)."""
    texts = [seg.text for s in batch for seg in s.segments]
    vectors = embedder.embed(texts) if texts else np.zeros((0, 1), dtype=np.float32)
    wvecs = _embed_whole(batch, whole) if whole is not None else [None] * len(batch)
    out, off = [], 0
    for s, w in zip(batch, wvecs, strict=True):
        out.append(Embedded(s, vectors[off : off + len(s.segments)], w))
        off += len(s.segments)
    return out


def _embed_whole(batch: Sequence[Segmented], whole: Embedder) -> list[np.ndarray | None]:
    """The whole-text model's vectors of each item's whole texts and captions, one call for the batch."""
    docs = [[seg.text for seg in s.segments if seg.kind in DOC_KINDS] for s in batch]
    flat = [t for d in docs for t in d]
    vecs = whole.embed(flat) if flat else np.zeros((0, whole.dim), dtype=np.float32)
    bounds = np.cumsum([0, *(len(d) for d in docs)])
    return [vecs[lo:hi] for lo, hi in itertools.pairwise(bounds)]


def write(batch: Sequence[Embedded], store: VectorStore) -> None:
    """Replace each content's rows in the store (before the books say done: see pixgrep.catalog)."""
    items = [e.store_item() for e in batch]
    whole = [e.whole for e in batch if e.whole is not None]
    if whole:
        store.upsert_many(items, whole=whole)
    else:
        store.upsert_many(items)
