"""An in-memory dense index beside embedded Milvus Lite.

Milvus Lite 3 is pure Python: every search walks all rows of the collection in
Python (deduplication and tombstone masks, ~1 µs a row) and copies the whole
vector matrix. Real memes have about 7 segments each (whole text, regions,
lines), so 10k images are ~70k rows and a dense search there costs ~80 ms.
This index keeps the same vectors as float16 codes in a faiss flat index
(inner product on unit vectors = cosine) and answers in a few milliseconds.

Milvus stays the store of record: the vectors are written to Milvus first, then
here. The index is persisted in SQLite next to the Lite data (``catalog.VectorFile``) so opening it is a
bulk read, and the store compares its row count with Milvus at open and rebuilds
it from Milvus when they differ (a crash between the two writes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from pixgrep.catalog import VectorFile
from pixgrep.segments import Hit, Segment


class LocalDenseIndex:
    def __init__(self, path: Path, dim: int) -> None:
        import faiss

        self.path = path
        self.dim = dim
        self._faiss = faiss
        self._lock = threading.Lock()
        self._file = VectorFile(path)
        self._index = self._new_index()
        self._next_id = 1
        self._load()

    def _new_index(self) -> object:
        f = self._faiss
        return f.IndexIDMap2(f.IndexScalarQuantizer(self.dim, f.ScalarQuantizer.QT_fp16, f.METRIC_INNER_PRODUCT))

    def _load(self) -> None:
        for rows in self._file.iter_vectors():
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), self.dim)
            self._index.add_with_ids(vecs.astype(np.float32), ids)  # type: ignore[attr-defined]
            self._next_id = int(ids[-1]) + 1

    def count(self) -> int:
        with self._lock:
            return int(self._index.ntotal)  # type: ignore[attr-defined]

    def segments_per_content(self) -> dict[str, int]:
        """content_hash -> its rows (as persisted; the in-memory index holds ``count()`` of them)."""
        with self._lock:
            return self._file.counts()

    def known(self, hashes: Sequence[str]) -> list[str]:
        """The hashes that have rows here (and so in Milvus, which this index mirrors)."""
        with self._lock:
            return self._file.known(hashes)

    def replace(self, items: Iterable[tuple[str, Sequence[Segment], np.ndarray]]) -> None:
        """Replace the rows of each content hash with its segments and vectors."""
        items = list(items)
        with self._lock:
            old = self._file.ids_of([h for h, _, _ in items])
            rows, vecs = [], []
            for content_hash, segments, vectors in items:
                for seg, vec in zip(segments, vectors, strict=True):
                    v = np.asarray(vec, dtype=np.float32)
                    rows.append(
                        (self._next_id, content_hash, seg.kind, seg.source, seg.text, v.astype(np.float16).tobytes())
                    )
                    vecs.append(v)
                    self._next_id += 1
            self._file.replace(old, rows)
            if old:
                self._index.remove_ids(np.asarray(old, dtype=np.int64))  # type: ignore[attr-defined]
            if rows:
                ids = np.asarray([r[0] for r in rows], dtype=np.int64)
                self._index.add_with_ids(np.vstack(vecs).reshape(-1, self.dim), ids)  # type: ignore[attr-defined]

    def delete(self, hashes: Sequence[str]) -> None:
        with self._lock:
            old = self._file.ids_of(hashes)
            if not old:
                return
            self._file.replace(old, [])
            self._index.remove_ids(np.asarray(old, dtype=np.int64))  # type: ignore[attr-defined]

    def clear(self) -> None:
        with self._lock:
            self._file.clear()
            self._index = self._new_index()

    def search(self, vector: np.ndarray, limit: int) -> list[Hit]:
        q = np.asarray(vector, dtype=np.float32).reshape(1, self.dim)
        with self._lock:
            n = int(self._index.ntotal)  # type: ignore[attr-defined]
            if n == 0 or limit <= 0:
                return []
            scores, ids = self._index.search(q, min(limit, n))  # type: ignore[attr-defined]
            found = [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]
            rows = self._file.rows([i for i, _ in found])
        return [Hit(*rows[i], score=s) for i, s in found if i in rows]

    def close(self) -> None:
        with self._lock:
            self._file.close()
