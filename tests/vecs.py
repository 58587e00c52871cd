"""Vectors and segments for the store and local-index tests: random unit rows, one image's four kinds of segment."""

from __future__ import annotations

import numpy as np
from pixgrep.segments import Segment

DIM = 8


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def segs(name: str) -> list[Segment]:
    return [
        Segment("full", "ocr", f"{name} whole", f"{name} whole"),
        Segment("region", "ocr", f"{name} panel", f"{name} panel"),
        Segment("line", "ocr", f"{name} line", f"{name} line"),
        Segment("caption", "caption", f"{name} caption", f"{name} caption"),
    ]
