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

With a second, whole-text model (``embed.whole_backend``), the documents also
have its vectors, in a second faiss index of their own dimension (the same ids):
the whole-text leg of the search (``search_whole``).
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pixgrep.catalog import VectorFile
from pixgrep.segments import Hit, Segment

DOC_KINDS = VectorFile.DOC_KINDS


# Above ``ann_rows`` rows the vectors are searched through an inverted file (IVF): 256 k-means
# cells trained at load on a sample of the rows, ``ann_probes`` of them visited a query. A flat
# scan reads every vector (364k float16 rows at 50k images: 20-40 ms on one core, most of a
# daemon search); 64 of 256 cells read a quarter of them. bench/dense_ann.py measures both.
ANN_LISTS = 256
ANN_TRAIN_PER_LIST = 64  # training rows per cell, at most (faiss warns below 39)
ANN_MIN_ROWS = ANN_LISTS * 8  # fewer rows than this are always scanned (and k-means has too little to go on)


def _trim_heap() -> None:
    """Give the heap that reading the rows used back to the system (glibc keeps it otherwise).

    Loading 364k rows reads every float16 blob into Python bytes and float32 batches: after the
    load the daemon held 100-140 MiB more than the index needs (``bench/RESULTS.md``).
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to give back this way
        pass


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

    def __init__(
        self,
        path: Path,
        dim: int,
        *,
        readonly: bool = False,
        whole_dim: int = 0,
        ann_rows: int = 0,
        ann_probes: int = 64,
    ) -> None:
        self.path = path
        self.dim = dim
        self.whole_dim = whole_dim
        self.readonly = readonly
        self.ann_rows = ann_rows  # 0: always the exact flat scan
        self.ann_probes = ann_probes
        self._lock = threading.Lock()
        self._next_id = 1
        self._index: object = None
        self._matrix: tuple[np.ndarray, np.ndarray] | None = None
        # The whole-text leg: its faiss index (writer, or a read-only snapshot) or rows matrix.
        self._whole: object = None
        self._whole_matrix: tuple[np.ndarray, np.ndarray] | None = None
        self._file = VectorFile(path, readonly=readonly)
        if readonly:
            return
        import faiss

        self._faiss = faiss
        _one_thread(faiss)
        if self._file.version() < VectorFile.VERSION:
            from pixgrep import textnorm

            self._file.fill_keywords(textnorm.document_tokens)
        rows = self._file.count()
        ivf = self.ann_rows and rows >= max(self.ann_rows, ANN_MIN_ROWS)
        self._index = self._new_index(sample=self._training_sample(rows) if ivf else None)
        self._whole = self._new_index(whole_dim) if whole_dim else None
        self._load()
        _trim_heap()

    def _new_index(self, dim: int = 0, sample: np.ndarray | None = None) -> object:
        """The exact flat index, or with a training ``sample`` an IVF one (both float16 codes, inner product)."""
        f = self._faiss
        dim = dim or self.dim
        if sample is None:
            return f.IndexIDMap2(f.IndexScalarQuantizer(dim, f.ScalarQuantizer.QT_fp16, f.METRIC_INNER_PRODUCT))
        ivf = f.IndexIVFScalarQuantizer(
            f.IndexFlatIP(dim), dim, ANN_LISTS, f.ScalarQuantizer.QT_fp16, f.METRIC_INNER_PRODUCT
        )
        ivf.cp.seed = 1234  # the same cells for the same rows
        ivf.train(sample)
        ivf.nprobe = self.ann_probes
        return ivf

    def _training_sample(self, rows: int) -> np.ndarray:
        """Rows spread over the whole file (not only the oldest), as float32, to train the IVF cells."""
        step = max(1, rows // (ANN_LISTS * ANN_TRAIN_PER_LIST))
        picked = [
            np.frombuffer(vec, dtype=np.float16) for batch in self._file.iter_vectors() for _, vec in batch[::step]
        ]
        return np.vstack(picked).astype(np.float32)

    @property
    def kind(self) -> str:
        """``flat`` (exact) or ``ivf`` (approximate, above ``ann_rows``): for status and benchmarks."""
        return "ivf" if self._index is not None and hasattr(self._index, "nprobe") else "flat"

    def _load(self) -> None:
        for whole, index, dim in ((False, self._index, self.dim), (True, self._whole, self.whole_dim)):
            if index is None:
                continue
            for rows in self._file.iter_vectors(whole=whole):
                ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
                vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), dim)
                index.add_with_ids(vecs.astype(np.float32), ids)  # type: ignore[attr-defined]
        self._next_id = self._file.max_id() + 1

    # Identity and snapshot --------------------------------------------------
    def _identity(self, embed_name: str, whole_name: str | None) -> str:
        whole = f"+{whole_name}/{self.whole_dim}" if whole_name else ""
        return f"{embed_name}/{self.dim}{whole}"

    def usable(self, embed_name: str, whole_name: str | None = None) -> bool:
        """Whether this file answers searches for ``embed_name`` (and the whole-text model
        ``whole_name``) on its own (a read-only search)."""
        try:
            version, embed = self._file.version(), self._file.meta("embed")
        except VectorFile.Error:
            return False
        return version >= VectorFile.VERSION and embed == self._identity(embed_name, whole_name)

    def set_embedder(self, embed_name: str, whole_name: str | None = None) -> None:
        with self._lock:
            self._file.set_meta("embed", self._identity(embed_name, whole_name))

    @property
    def snapshot_path(self) -> Path:
        return self.path.with_name(self.path.name + ".faiss")

    @property
    def whole_snapshot_path(self) -> Path:
        return self.path.with_name(self.path.name + ".whole.faiss")

    def snapshot(self) -> None:
        """Write the faiss indexes to files a read-only search loads in one read (the writer's close)."""
        with self._lock:
            if self._index is None:
                return
            for index, path in ((self._index, self.snapshot_path), (self._whole, self.whole_snapshot_path)):
                if index is not None:
                    tmp = path.with_name(path.name + ".tmp")
                    self._faiss.write_index(index, str(tmp))  # type: ignore[call-overload]
                    tmp.replace(path)
            self._file.set_meta("snapshot", self._file.meta("generation") or "0")

    def _load_snapshot(self, whole: bool = False) -> object:
        """Read-only: the writer's snapshot if it is of the current generation (else None: the rows are read)."""
        path = self.whole_snapshot_path if whole else self.snapshot_path
        gen = self._file.meta("generation") or "0"
        if self._file.meta("snapshot") != gen or not path.exists():
            return None
        import faiss

        _one_thread(faiss)
        try:
            index = faiss.read_index(str(path))
        except RuntimeError:  # damaged or partial: the rows are the truth
            return None
        if hasattr(index, "nprobe"):  # an IVF snapshot: this configuration's probes
            index.nprobe = self.ann_probes
        return index

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
    def replace(
        self,
        items: Iterable[tuple[str, Sequence[Segment], np.ndarray]],
        whole: Sequence[np.ndarray] | None = None,
    ) -> None:
        """Replace the rows of each content hash with its segments and vectors; ``whole``, per item,
        the whole-text model's vectors of its documents (whole texts and captions, in order)."""
        items = list(items)
        with self._lock:
            old = self._file.ids_of([h for h, _, _ in items])
            rows, vecs, kws, doc_ids = [], [], [], []
            for content_hash, segments, vectors in items:
                for seg, vec in zip(segments, vectors, strict=True):
                    v = np.asarray(vec, dtype=np.float32)
                    rows.append(
                        (self._next_id, content_hash, seg.kind, seg.source, seg.text, v.astype(np.float16).tobytes())
                    )
                    if seg.kind in DOC_KINDS:
                        kws.append((self._next_id, seg.kw))
                        doc_ids.append(self._next_id)
                    vecs.append(v)
                    self._next_id += 1
            wvecs, wrows = self._whole_rows(whole, doc_ids)
            self._file.replace(old, rows, kws, wrows)
            self._remove(old)
            if rows:
                ids = np.asarray([r[0] for r in rows], dtype=np.int64)
                self._index.add_with_ids(np.vstack(vecs).reshape(-1, self.dim), ids)  # type: ignore[attr-defined]
            if wrows:
                self._whole.add_with_ids(wvecs, np.asarray(doc_ids, dtype=np.int64))  # type: ignore[attr-defined]

    def _whole_rows(self, whole: Sequence[np.ndarray] | None, ids: list[int]) -> tuple[np.ndarray, list[Any]]:
        """The whole-text vectors of one write, one per document row, and their (id, float16 bytes)
        rows; none without a whole-text model. Refused if they don't fit."""
        dim = self.whole_dim
        if not dim:
            return np.zeros((0, 0), dtype=np.float32), []
        w = np.vstack(
            [np.zeros((0, dim), np.float32)] + [np.asarray(x, np.float32).reshape(-1, dim) for x in whole or ()]
        )
        if len(w) != len(ids):
            raise ValueError(f"{len(ids)} documents but {len(w)} whole-text vectors")
        return w, [(i, v.astype(np.float16).tobytes()) for i, v in zip(ids, w, strict=True)]

    def _remove(self, ids: Sequence[int]) -> None:
        """Drop ``ids`` from the in-memory indexes (the caller holds the lock)."""
        for index in (self._index, self._whole) if ids else ():
            if index is not None:
                index.remove_ids(np.asarray(ids, dtype=np.int64))  # type: ignore[attr-defined]

    def delete(self, hashes: Sequence[str]) -> None:
        with self._lock:
            old = self._file.ids_of(hashes)
            if not old:
                return
            self._file.replace(old, [])
            self._remove(old)

    def clear(self) -> None:
        with self._lock:
            self._file.clear()
            self._index = self._new_index()
            self._whole = self._new_index(self.whole_dim) if self.whole_dim else None

    # Reads --------------------------------------------------------------------
    def _nearest(self, q: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """(id, inner product) of the nearest rows, best first; the caller holds the lock."""
        if self._index is None and self._matrix is None and self.readonly:
            self._index = self._load_snapshot()
        if self._index is None:
            if self._matrix is None:
                self._matrix = self._read_matrix(whole=False)
            return self._nearest_in_rows(self._matrix, q, limit)
        return self._search_index(self._index, q, limit)

    def _nearest_whole(self, q: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """``_nearest`` over the whole-text vectors."""
        if self._whole is None and self._whole_matrix is None and self.readonly:
            self._whole = self._load_snapshot(whole=True)
        if self._whole is None:
            if self._whole_matrix is None:
                self._whole_matrix = self._read_matrix(whole=True)
            return self._nearest_in_rows(self._whole_matrix, q, limit)
        return self._search_index(self._whole, q, limit)

    @staticmethod
    def _search_index(index: Any, q: np.ndarray, limit: int) -> list[tuple[int, float]]:
        n = int(index.ntotal)
        if n == 0:
            return []
        scores, ids = index.search(q, min(limit, n))
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0], strict=True) if i >= 0]

    def _read_matrix(self, *, whole: bool) -> tuple[np.ndarray, np.ndarray]:
        dim = self.whole_dim if whole else self.dim
        rows = [r for batch in self._file.iter_vectors(whole=whole) for r in batch]
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float16).reshape(len(rows), dim)
        return ids, vecs

    @staticmethod
    def _nearest_in_rows(matrix: tuple[np.ndarray, np.ndarray], q: np.ndarray, limit: int) -> list[tuple[int, float]]:
        """Read-only without a current snapshot: every vector from SQLite, searched once with numpy."""
        ids, vecs = matrix
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

    def search_whole(self, vector: np.ndarray, limit: int) -> list[Hit]:
        """Nearest documents by the whole-text model's vectors (none without one)."""
        if limit <= 0 or not self.whole_dim:
            return []
        q = np.asarray(vector, dtype=np.float32).reshape(1, self.whole_dim)
        with self._lock:
            return self._hits(self._nearest_whole(q, limit))

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
