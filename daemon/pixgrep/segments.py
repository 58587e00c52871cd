"""Segments: the rows an image is stored as, and the hits a search returns.

Each image becomes several rows: the whole OCR text, each block of adjacent
lines (a panel, a subtitle), each line and each caption. Search groups hits by
content hash, so a multi-panel meme matches on the panel the query is about.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from pixgrep import textnorm
from pixgrep.stages import OcrLine


@dataclass(frozen=True)
class Segment:
    kind: str  # full | region | line | caption
    source: str  # ocr | caption
    text: str
    kw: str  # keyword tokens (textnorm.document_tokens)


@dataclass(frozen=True)
class Hit:
    content_hash: str
    kind: str
    source: str
    text: str
    score: float


def regions(lines: Sequence[OcrLine]) -> list[list[OcrLine]]:
    """Group OCR lines into blocks of vertically adjacent lines (panels, subtitles)."""
    if not lines:
        return []
    out: list[list[OcrLine]] = [[lines[0]]]
    for prev, line in itertools.pairwise(lines):
        if prev.box and line.box:
            height = max(prev.box[3] - prev.box[1], line.box[3] - line.box[1], 1.0)
            gap = line.box[1] - prev.box[3]
            overlap_x = min(prev.box[2], line.box[2]) - max(prev.box[0], line.box[0])
            if -height <= gap <= 1.2 * height and overlap_x > -height:
                out[-1].append(line)
                continue
        out.append([line])
    return out


def _ocr_segments(lines: Sequence[OcrLine]) -> list[Segment]:
    texts = [ln.text for ln in lines]
    if not texts:
        return []
    full = "\n".join(texts)
    segs = [Segment("full", "ocr", full, textnorm.document_tokens(full))]
    if len(texts) == 1:
        return segs
    seen = {full}
    blocks = ["\n".join(ln.text for ln in block) for block in regions(lines)]
    for kind, group in (("region", blocks), ("line", texts)):
        for t in group:
            if t not in seen:
                seen.add(t)
                segs.append(Segment(kind, "ocr", t, textnorm.document_tokens(t)))
    return segs


def build_segments(lines: Sequence[OcrLine], captions: Sequence[str]) -> list[Segment]:
    """The rows of one image: whole text, new regions, new lines, then each distinct caption."""
    segs = _ocr_segments(lines)
    for cap in dict.fromkeys(c.strip() for c in captions if c.strip()):
        segs.append(Segment("caption", "caption", cap, textnorm.document_tokens(cap)))
    return segs
