"""The local index beside embedded Milvus Lite: dense vectors in memory, keywords in SQLite FTS5.

Milvus Lite 3 is pure Python: every search walks all rows of the collection in
Python (deduplication and tombstone masks, ~1 µs a row) and copies the whole
vector matrix. Real memes have about 7 segments each (whole text, regions,
lines), so 10k images are ~70k rows and a dense search there costs ~80 ms.
This index keeps the same vectors as float16 codes in a faiss flat index
(inner product on unit vectors = cosine) and answers in a few milliseconds.

Milvus Lite holds only the documents (whole texts and captions, one or two rows
an image): Lite loads every row of every collection into memory when it opens,
so the OCR regions and lines (six of every seven rows) live only here. The
documents are written to Milvus first, then here; the store compares the two at
open and repairs this index from Milvus when they differ (a crash between the
two writes). Keyword search runs here too (FTS5's BM25 over the same tokens),
so a search never walks Lite's rows, and a process without the daemon can
answer from this file alone, read-only (``readonly=True``), without opening
Milvus Lite, whose lock the daemon may hold. The rows are persisted in SQLite
(``catalog.VectorFile``); the writer's close also writes a faiss snapshot that
such a read-only search loads in one read while it is current.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixgrep.catalog import VectorFile
from pixgrep.segments import Hit, Segment

DOC_KINDS = VectorFile.DOC_KINDS


def _one_thread(faiss: Any) -> None:
    """Searches here are one query each: faiss's OpenMP threads would only wait for one another
    (on the shared 2-core machine 100 ms a search at 72k rows on two threads, 15 ms on one)."""
    faiss.omp_set_num_threads(1)


class LocalDenseIndex:
    """Segments with their vectors (faiss, float16) and keyword tokens (FTS5), persisted in SQLite.

    ``readonly=True`` opens the file without writing to it (a search while no
    daemon runs): the vectors come from the writer's snapshot if it is current,
    else from the rows, into a numpy matrix (faiss would not pay back for one query).
    """

    def __init__(self, path: Path, dim: int, *, readonly: bool = False) -> None:
        self.path = path
        self.dim = dim
        self.readonly = readonly
        self._lock = threading.Lock()
        self._next_id = 1
        self._index: object = None
        self._matrix: tuple[np.ndarray, np.ndarray] | None = None
        self._file = VectorFile(path, readonly=readonly)
        if readonly:
            return
        import faiss

        self._faiss = faiss
        _one_thread(faiss)
        if self._file.version() < VectorFile.VERSION:
            from pixgrep import textnorm

            self._file.fill_keywords(textnorm.document_tokens)
        self._index = self._new_index()
        self._load()

    def _new_index(self) -> object:
        f = self._faiss
        return f.IndexIDMap2(f.IndexScalarQuantizer(self.dim, f.ScalarQuantizer.QT_fp16, f.METRIC_INNER_PRODUCT))

    def _load(self) -> None:
        for rows in self._file.iter_vectors():
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), self.dim)
            self._index.add_with_ids(vecs.astype(np.float32), ids)  # type: ignore[attr-defined]
        self._next_id = self._file.max_id() + 1

    # Identity and snapshot --------------------------------------------------
    def usable(self, embed_name: str) -> bool:
        """Whether this file answers searches for ``embed_name`` on its own (a read-only search)."""
        try:
            version, embed = self._file.version(), self._file.meta("embed")
        except VectorFile.Error:
            return False
        return version >= VectorFile.VERSION and embed == f"{embed_name}/{self.dim}"

    def set_embedder(self, embed_name: str) -> None:
        with self._lock:
            self._file.set_meta("embed", f"{embed_name}/{self.dim}")

    @property
    def snapshot_path(self) -> Path:
        return self.path.with_name(self.path.name + ".faiss")

    def snapshot(self) -> None:
        """Write the faiss index to a file a read-only search loads in one read (the writer's close)."""
        with self._lock:
            if self._index is None:
                return
            tmp = self.snapshot_path.with_name(self.snapshot_path.name + ".tmp")
            self._faiss.write_index(self._index, str(tmp))  # type: ignore[call-overload]
            tmp.replace(self.snapshot_path)
            self._file.set_meta("snapshot", self._file.meta("generation") or "0")

    def _load_snapshot(self) -> None:
        """Read-only: the writer's snapshot if it is of the current generation (else the rows are read)."""
        gen = self._file.meta("generation") or "0"
        if self._file.meta("snapshot") != gen or not self.snapshot_path.exists():
            return
        import faiss

        _one_thread(faiss)
        try:
            self._index = faiss.read_index(str(self.snapshot_path))
        except RuntimeError:  # damaged or partial: the rows are the truth
            self._index = None

    # Counts -------------------------------------------------------------------
    def count(self) -> int:
        with self._lock:
            if self._index is None:
                return self._file.count()
            return int(self._index.ntotal)  # type: ignore[attr-defined]

    def segments_per_content(self) -> dict[str, int]:
        """content_hash -> its rows (as persisted; the in-memory index holds ``count()`` of them)."""
        with self._lock:
            return self._file.counts()

    def parts_per_content(self) -> dict[str, int]:
        """content_hash -> its region and line rows."""
        with self._lock:
            return self._file.parts_per_content()

    def doc_hashes(self) -> set[str]:
        """The content hashes that have document rows here."""
        with self._lock:
            return self._file.doc_hashes()

    def count_docs(self) -> int:
        with self._lock:
            return self._file.count_docs()

    def orphan_parts(self) -> set[str]:
        """Content hashes with regions or lines here but no document row."""
        with self._lock:
            return self._file.orphan_parts()

    def known(self, hashes: Sequence[str]) -> list[str]:
        """The hashes that have rows here (and so in Milvus, which this index mirrors)."""
        with self._lock:
            return self._file.known(hashes)

    # Writes -------------------------------------------------------------------
    def replace(self, items: Iterable[tuple[str, Sequence[Segment], np.ndarray]]) -> None:
        """Replace the rows of each content hash with its segments and vectors."""
        items = list(items)
        with self._lock:
            old = self._file.ids_of([h for h, _, _ in items])
            rows, vecs, kws = [], [], []
            for content_hash, segments, vectors in items:
                for seg, vec in zip(segments, vectors, strict=True):
                    v = np.asarray(vec, dtype=np.float32)
                    rows.append(
                        (self._next_id, content_hash, seg.kind, seg.source, seg.text, v.astype(np.float16).tobytes())
                    )
                    if seg.kind in DOC_KINDS:
                        kws.append((self._next_id, seg.kw))
                    vecs.append(v)
                    self._next_id += 1
            self._file.replace(old, rows, kws)
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

    # Reads --------------------------------------------------------------------
    def _nearest(self, q: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """(id, inner product) of the nearest rows, best first; the caller holds the lock."""
        if self._index is None and self._matrix is None and self.readonly:
            self._load_snapshot()
        if self._index is None:
            return self._nearest_in_rows(q, limit)
        n = int(self._index.ntotal)  # type: ignore[attr-defined]
        if n == 0:
            return []
        scores, ids = self._index.search(q, min(limit, n))  # type: ignore[attr-defined]
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def _nearest_in_rows(self, q: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """Read-only without a current snapshot: every vector from SQLite, searched once with numpy."""
        if self._matrix is None:
            rows = [r for batch in self._file.iter_vectors() for r in batch]
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), self.dim)
            self._matrix = (ids, vecs)
        ids, vecs = self._matrix
        if not len(ids):
            return []
        scores = np.concatenate([vecs[i : i + 65536].astype(np.float32) @ q[0] for i in range(0, len(ids), 65536)])
        top = np.argpartition(-scores, min(limit, len(ids)) - 1)[:limit]
        top = top[np.argsort(-scores[top], kind="stable")]
        return [(int(ids[i]), float(scores[i])) for i in top]

    def _hits(self, found: list[tuple[int, float]]) -> list[Hit]:
        rows = self._file.rows([i for i, _ in found])
        return [Hit(*rows[i], score=s) for i, s in found if i in rows]

    def search(self, vector: np.ndarray, limit: int) -> list[Hit]:
        q = np.asarray(vector, dtype=np.float32).reshape(1, self.dim)
        if limit <= 0:
            return []
        with self._lock:
            return self._hits(self._nearest(q, limit))

    def search_keyword(self, tokens: str, limit: int) -> list[Hit]:
        """Best BM25 documents (FTS5) for space-separated tokens, any of them, best first; scores > 0."""
        terms = dict.fromkeys(t for t in tokens.split() if t)
        if not terms or limit <= 0:
            return []
        # Each token is one quoted FTS5 string, so no query syntax reaches FTS5 from the user.
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        with self._lock:
            try:
                found = self._file.keyword_search(match, limit)
            except VectorFile.Error:
                return []  # tokens FTS5 splits to nothing (punctuation only)
            return [h for h in self._hits(found) if h.score > 0]

    def close(self) -> None:
        with self._lock:
            self._file.close()
