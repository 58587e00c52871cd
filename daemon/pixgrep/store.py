"""The vector store: Milvus (embedded Milvus Lite or a server) via MilvusClient.

One row per text segment of a content. Rows carry the content hash, so upserts
and deletes are keyed by it and search results are grouped by image. Two
collections: ``<name>`` holds the documents (an image's whole OCR text and its
captions) with their BM25 keyword index and vectors; ``<name>_parts`` holds the
vectors of OCR regions and lines. Keyword search reads only the first, so its
cost follows the number of images, not of lines. With embedded Milvus Lite,
the local index (``localdense``) serves both legs, and the parts live only
there: Lite holds every row of its collections in memory (three copies of each
vector), so the ``_parts`` collection is not written (and an old one is dropped
once the local index has its rows).

With a second, whole-text model (``embed.whole_backend``), each document row also
has its vector in a second vector field, ``whole``, of that model's dimension
(the local index keeps a second faiss index of them): the search's whole-text leg.
The collection records both models, so a change of either is refused until
``pixgrep reindex --embeddings``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np

from pixgrep import litehost
from pixgrep.errors import EmbeddingMismatch, StoreUnavailable
from pixgrep.segments import Hit, Segment
from pixgrep.settings import is_lite_uri

if TYPE_CHECKING:
    from pixgrep.localdense import LocalDenseIndex

log = logging.getLogger("pixgrep.store")

MAX_TEXT = 2000  # characters kept per row; OCR lines are far shorter
MAX_KW = 12000
LAYOUT = "2"  # documents and parts in two collections
DOC_KINDS = frozenset({"full", "caption"})


@dataclass(frozen=True)
class IndexParams:
    """How the dense field is indexed and searched (``milvus.index`` and ``milvus.hnsw_*``)."""

    index: str = "auto"  # auto | FLAT | HNSW; auto is FLAT on Milvus Lite, HNSW on a server
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef: int = 64
    search_consistency: str = "Strong"
    # The local index beside Lite: exact up to this many rows, IVF above (search.ann_rows, ann_probes).
    local_ann_rows: int = 0
    local_ann_probes: int = 64


# One content's rows: (content hash, its segments, their vectors row-aligned).
StoreItem = tuple[str, Sequence[Segment], np.ndarray]


class Searcher(Protocol):
    """What a search reads: the two legs."""

    def search_dense(self, vector: np.ndarray, limit: int) -> list[Hit]:
        """Nearest segments by cosine similarity, best first."""
        ...

    def search_keyword(self, tokens: str, limit: int) -> list[Hit]:
        """Best BM25 segments for space-separated query tokens, best first; scores > 0."""
        ...

    def search_whole(self, vector: np.ndarray, limit: int) -> list[Hit]:
        """Nearest whole texts and captions by the whole-text model's vectors, best first (none without one)."""
        ...


class VectorStore(Searcher, Protocol):
    """Where segment vectors live; everything the pipeline and search call.

    Upserts replace all rows of a content hash. A store that cannot be reached
    raises ``StoreUnavailable`` (the pipeline retries later); writes may be
    buffered until ``flush``. ``unembedded``: contents whose vectors the store
    lost and the pipeline re-embeds from the books after opening it.
    """

    unembedded: list[str]

    def upsert(self, content_hash: str, segments: Sequence[Segment], vectors: np.ndarray) -> None:
        """Replace the rows of ``content_hash`` with ``segments`` (vectors row-aligned)."""
        ...

    def upsert_many(self, items: Sequence[StoreItem], whole: Sequence[np.ndarray] | None = None) -> None:
        """``upsert`` for several contents at once (one write per batch); ``whole``, per item, the
        whole-text model's vectors of its whole texts and captions, in segment order."""
        ...

    def delete(self, hashes: Sequence[str]) -> None:
        """Remove all rows of the given content hashes."""
        ...

    def purge(self, hashes: Sequence[str]) -> None:
        """``delete``, even rows a store's own cache does not know of (``pixgrep doctor --repair``)."""
        ...

    def flush(self) -> None:
        """Make buffered writes durable and visible to search."""
        ...

    def count(self) -> int:
        """Rows (segments) stored, all contents together."""
        ...

    def segments_per_content(self) -> dict[str, int]:
        """Content hash -> how many rows it has (consistency checks)."""
        ...

    def probe(self) -> None:
        """Raise StoreUnavailable unless the store answers now (the worker's outage probe)."""
        ...

    def close(self) -> None:
        """Flush and release the connection."""
        ...


def _row(content_hash: str, i: int, seg: Segment, vec: np.ndarray) -> dict[str, Any]:
    """The Milvus row of one segment; a document's has its keyword text."""
    row = {
        "id": f"{content_hash}:{i}",
        "content_hash": content_hash,
        "kind": seg.kind,
        "source": seg.source,
        "text": seg.text[:MAX_TEXT],
        "dense": np.asarray(vec, dtype=np.float32).tolist(),
    }
    if seg.kind in DOC_KINDS:
        # A row needs at least one token for BM25; "∅" never matches a query token.
        row["kw"] = seg.kw[:MAX_KW] or "∅"
    return row


def _gather(into: tuple[list[Segment], list[np.ndarray], list[np.ndarray]], r: dict[str, Any]) -> None:
    """Add a Milvus row to its content's segments, vectors and (a document's, where kept) whole-text vectors."""
    from pixgrep import textnorm

    segs, vecs, wvecs = into
    kw = textnorm.document_tokens(r["text"]) if r["kind"] in DOC_KINDS else ""
    segs.append(Segment(r["kind"], r["source"], r["text"], kw))
    vecs.append(np.asarray(r["dense"], dtype=np.float32))
    if "whole" in r:
        wvecs.append(np.asarray(r["whole"], dtype=np.float32).reshape(1, -1))


def _item_rows(
    content_hash: str, segments: Sequence[Segment], vectors: np.ndarray, whole: np.ndarray | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Milvus rows of one content: its documents (with their whole-text vectors, if given) and its parts."""
    rows = [_row(content_hash, i, seg, vec) for i, (seg, vec) in enumerate(zip(segments, vectors, strict=True))]
    docs = [r for r in rows if "kw" in r]
    if whole is not None:
        for r, w in zip(docs, whole, strict=True):
            r["whole"] = np.asarray(w, dtype=np.float32).tolist()
    return docs, [r for r in rows if "kw" not in r]


def _wrap(e: Exception, what: str) -> StoreUnavailable:
    return StoreUnavailable(f"Milvus {what} failed: {str(e).splitlines()[0][:300]}")


class MilvusStore:
    OUTPUT: ClassVar[list[str]] = ["content_hash", "kind", "source", "text"]

    def __init__(
        self,
        uri: str,
        collection: str,
        embed_name: str,
        dim: int,
        token: str = "",
        timeout: float = 10.0,
        flush_rows: int = 2000,
        recreate: bool = False,
        local_dense: bool | None = None,
        params: IndexParams | None = None,
        whole: tuple[str, int] | None = None,
    ) -> None:
        from pymilvus import MilvusClient

        from pixgrep.logs import quiet_pymilvus

        quiet_pymilvus()  # its import installed its own traceback-printing handlers
        self.uri = uri
        self.is_lite = is_lite_uri(uri)
        self.collection = collection
        self.parts = f"{collection}_parts"
        self.embed_name = embed_name
        self.dim = dim
        # The whole-text model (name, dim), if one is configured: a second vector field of the documents.
        self.whole = whole
        self.timeout = timeout
        self.flush_rows = flush_rows
        self._unflushed = 0
        self.metric = "IP"
        self.params = params or IndexParams()
        self.index_type = "FLAT"
        self._lock = threading.RLock()
        self.local: LocalDenseIndex | None = None
        # Why the local index was rebuilt from Milvus at open, if it was (``pixgrep doctor`` reports it).
        self.local_rebuilt: str | None = None
        # Contents whose parts the local index lost (a damaged file): the pipeline re-embeds them.
        self.unembedded: list[str] = []
        self._with_parts = True
        # Lite is served on a private Unix socket, never on pymilvus's unauthenticated loopback TCP port.
        self._lite_data: str | None = None
        client_uri = uri
        if self.is_lite:
            try:
                client_uri = litehost.acquire(uri)
            except StoreUnavailable:
                raise
            except Exception as e:
                raise _wrap(e, f"open of {uri}") from e
            self._lite_data = uri
        self._client_uri, self._token = client_uri, token
        try:
            try:
                self.client = MilvusClient(uri=client_uri, token=token, timeout=timeout)
            except Exception as e:
                raise _wrap(e, f"connection to {uri}") from e
            self._setup(recreate, local_dense)
        except BaseException:
            if getattr(self, "client", None) is not None:
                self.client.close()
            if self._lite_data is not None:
                litehost.release(self._lite_data)
            raise

    @property
    def whole_name(self) -> str | None:
        return self.whole[0] if self.whole else None

    @property
    def whole_dim(self) -> int:
        return self.whole[1] if self.whole else 0

    def _setup(self, recreate: bool, local_dense: bool | None) -> None:
        collection, uri = self.collection, self.uri
        if recreate:
            try:
                for name in (collection, self.parts):
                    if self.client.has_collection(name):
                        self.client.drop_collection(name)
            except Exception as e:
                raise _wrap(e, "drop") from e
        # Milvus Lite walks every row in Python on each search; a server has real indexes.
        use_local = self.is_lite if local_dense is None else local_dense
        self._ensure_collections(parts=not use_local)
        if use_local:
            self._open_local(local_path(uri, collection), recreate)

    # Setup ---------------------------------------------------------------
    def _ensure_collections(self, *, parts: bool) -> None:
        try:
            if self.client.has_collection(self.collection):
                self._check_properties(self.client.describe_collection(self.collection).get("properties", {}))
            else:
                self._create(self.collection, keyword=True)
            if parts and not self.client.has_collection(self.parts):
                self._create(self.parts, keyword=False)
            self._with_parts = bool(self.client.has_collection(self.parts))
            # Milvus Lite needs a load after every open; a server needs it once.
            for name in self._collections():
                self.client.load_collection(name)
            # An existing collection keeps the index it was built with; search to match it.
            dense = self.client.describe_index(self.collection, "dense")
            self.metric = dense.get("metric_type", "IP")
            self.index_type = str(dense.get("index_type", "FLAT")).upper()
        except EmbeddingMismatch:
            raise
        except Exception as e:
            raise _wrap(e, "collection setup") from e

    def _check_properties(self, props: dict[str, Any]) -> None:
        """Raise EmbeddingMismatch unless the collection holds vectors of the configured models, in this layout."""
        have_model, have_dim = props.get("pixgrep.embed_model"), props.get("pixgrep.dim")
        if have_model != self.embed_name or str(have_dim) != str(self.dim):
            raise EmbeddingMismatch(
                f"collection {self.collection!r} holds vectors of {have_model} (dim {have_dim}), "
                f"but the embedder is now {self.embed_name} (dim {self.dim}); "
                "run `pixgrep reindex --embeddings` to rebuild it, or change embed.backend back"
            )
        have_whole = props.get("pixgrep.whole_model")
        if have_whole != self.whole_name or str(props.get("pixgrep.whole_dim", 0)) != str(self.whole_dim):
            raise EmbeddingMismatch(
                f"collection {self.collection!r} holds whole-text vectors of {have_whole or 'no model'}, "
                f"but embed.whole_backend is now {self.whole_name or 'none'}; "
                "run `pixgrep reindex --embeddings` to rebuild it, or change embed.whole_backend back"
            )
        if props.get("pixgrep.layout") != LAYOUT:
            raise EmbeddingMismatch(
                f"collection {self.collection!r} was written by an older pixgrep (one collection for "
                "all segments); run `pixgrep reindex --embeddings` to rebuild it without OCR"
            )

    def _create(self, name: str, *, keyword: bool) -> None:
        from pymilvus import DataType, Function, FunctionType

        s = self.client.create_schema(auto_id=False)
        s.add_field("id", DataType.VARCHAR, is_primary=True, max_length=96)
        s.add_field("content_hash", DataType.VARCHAR, max_length=64)
        s.add_field("kind", DataType.VARCHAR, max_length=16)
        s.add_field("source", DataType.VARCHAR, max_length=16)
        s.add_field("text", DataType.VARCHAR, max_length=MAX_TEXT * 4)
        if keyword:
            s.add_field(
                "kw",
                DataType.VARCHAR,
                max_length=MAX_KW * 4,
                enable_analyzer=True,
                # Tokens are pre-cut by textnorm (CJK bigrams), so the standard tokenizer only splits on spaces.
                analyzer_params={"tokenizer": "standard", "filter": ["lowercase"]},
            )
            s.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            s.add_function(
                Function(
                    name="kw_bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["kw"],
                    output_field_names=["sparse"],
                )
            )
        s.add_field("dense", DataType.FLOAT_VECTOR, dim=self.dim)
        whole = keyword and self.whole_name is not None
        if whole:
            s.add_field("whole", DataType.FLOAT_VECTOR, dim=self.whole_dim)
        ip = self._index_params(("dense", "whole") if whole else ("dense",))
        if keyword:
            ip.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        if not self.is_lite:
            ip.add_index("content_hash", index_type="INVERTED")
        props = {"pixgrep.embed_model": self.embed_name, "pixgrep.dim": str(self.dim), "pixgrep.layout": LAYOUT}
        if whole:
            props |= {"pixgrep.whole_model": str(self.whole_name), "pixgrep.whole_dim": str(self.whole_dim)}
        self.client.create_collection(
            name,
            schema=s,
            index_params=ip,
            # Reads that must see the writes before them ask for Strong themselves (count, the
            # consistency checks, searches by default); the rest need not wait for it.
            consistency_level="Bounded",
            properties=props,
        )
        log.info("created collection %s for %s (dim %d) at %s", name, self.embed_name, self.dim, self.uri)

    def _index_params(self, fields: tuple[str, ...]) -> Any:
        ip = self.client.prepare_index_params()
        # Vectors are L2-normalised, so inner product is cosine; Milvus Lite's COSINE
        # re-normalises every stored vector on every query, IP does not (2x faster here).
        index = self.params.index if self.params.index != "auto" else ("FLAT" if self.is_lite else "HNSW")
        for field in fields:
            if index == "HNSW":
                hnsw = {"M": self.params.hnsw_m, "efConstruction": self.params.hnsw_ef_construction}
                ip.add_index(field, index_type="HNSW", metric_type="IP", params=hnsw)
            else:
                ip.add_index(field, index_type="FLAT", metric_type="IP")
        return ip

    def _collections(self) -> tuple[str, ...]:
        """The collections in Milvus: the parts only where no local index holds them (or not yet)."""
        return (self.collection, self.parts) if self._with_parts else (self.collection,)

    def _open_local(self, path: Path, recreate: bool) -> None:
        from pixgrep.catalog import VectorFile

        try:
            local = self._new_local(path)
        except (VectorFile.Error, ValueError) as e:
            # It only mirrors Milvus: a damaged file is set aside and rebuilt below.
            log.warning("in-memory vector index %s is unreadable (%s); rebuilding it from Milvus", path, e)
            for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
                if p.exists():
                    p.replace(p.with_name(p.name + ".damaged"))
            local = self._new_local(path)
        if recreate:
            local.clear()
        if self._with_parts:
            self._adopt_parts(local)
        else:
            self._repair_local(local)
        local.set_embedder(self.embed_name, self.whole_name)
        self.local = local

    def _new_local(self, path: Path) -> LocalDenseIndex:
        from pixgrep.localdense import LocalDenseIndex

        p = self.params
        return LocalDenseIndex(
            path, self.dim, whole_dim=self.whole_dim, ann_rows=p.local_ann_rows, ann_probes=p.local_ann_probes
        )

    def _adopt_parts(self, local: LocalDenseIndex) -> None:
        """An index from before the parts lived only locally: mirror both collections, then drop the parts."""
        milvus_rows = self.count()
        if local.count() != milvus_rows:
            self.local_rebuilt = f"the local dense index had {local.count()} rows, Milvus {milvus_rows}"
            # A crash between the Milvus write and this one, or an index from before it existed.
            log.warning("rebuilding the in-memory vector index from Milvus (%d rows)", milvus_rows)
            local.clear()
            self._copy_rows(local, None)
        self.client.drop_collection(self.parts)
        self._with_parts = False
        log.info("the OCR regions and lines now live only in the local index %s", local.path)

    def _repair_local(self, local: LocalDenseIndex) -> None:
        """Make the local index's documents those of Milvus (a crash between the two writes, a lost file)."""
        orphans = local.orphan_parts()  # lines of no document: a write that died half-way
        if local.count_docs() == self._count(self.collection) and not orphans:
            return
        milvus = {r["content_hash"] for rows in self._iter_rows(["content_hash"]) for r in rows}
        mine = local.doc_hashes()
        extra, missing = (mine - milvus) | orphans, milvus - mine
        self.local_rebuilt = f"the local index had {len(extra)} contents Milvus lacks and lacked {len(missing)}"
        log.warning(
            "repairing the local vector index from Milvus: %d contents to drop, %d to restore", len(extra), len(missing)
        )
        local.delete(sorted(extra))
        if missing:
            self._copy_rows(local, missing)
            # Their regions and lines were only in the lost rows: the pipeline re-embeds them from the books.
            self.unembedded = sorted(missing)

    def _copy_rows(self, local: LocalDenseIndex, only: set[str] | None) -> None:

        # A content's rows may be in both collections: gather them all before replacing.
        by_hash: dict[str, tuple[list[Segment], list[np.ndarray], list[np.ndarray]]] = {}
        for batch in self._iter_rows(["content_hash", "kind", "source", "text", "dense"]):
            for r in batch:
                if only is None or r["content_hash"] in only:
                    _gather(by_hash.setdefault(r["content_hash"], ([], [], [])), r)
        items = [(h, segs, np.vstack(vecs)) for h, (segs, vecs, _) in by_hash.items()]
        whole = [np.vstack([np.zeros((0, self.whole_dim), np.float32), *w]) for _, _, w in by_hash.values()]
        local.replace(items, whole if self.whole else None)

    def _iter_rows(self, fields: list[str]) -> Any:
        """Every row of both collections, in batches, grouped so a content's rows share a batch."""
        for name in self._collections():
            # The whole-text vectors are a field of the documents only.
            want = [*fields, "whole"] if "dense" in fields and self.whole_name and name == self.collection else fields
            it = self.client.query_iterator(
                name, batch_size=4000, filter='content_hash != ""', output_fields=want, consistency_level="Strong"
            )
            rows: list[dict[str, Any]] = []
            try:
                while batch := it.next():
                    rows.extend(batch)
            finally:
                it.close()
            yield rows

    def _call(self, what: str, fn: Any) -> Any:
        """Run one client call; reload a released collection once (a restarted server forgets loads)."""
        try:
            return fn()
        except Exception as e:
            if "load" not in str(e).lower() and "released" not in str(e).lower():
                raise _wrap(e, what) from e
            try:
                for name in self._collections():
                    self.client.load_collection(name, timeout=self.timeout)
                return fn()
            except Exception as e2:
                raise _wrap(e2, what) from e2

    # Writes --------------------------------------------------------------
    def upsert(self, content_hash: str, segments: Sequence[Segment], vectors: np.ndarray) -> None:
        self.upsert_many([(content_hash, segments, vectors)])

    def _rows(
        self, items: Sequence[StoreItem], whole: Sequence[np.ndarray] | None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Milvus rows of ``items``: the documents, and the parts (none where the local index holds them)."""
        if (whole is not None) != (self.whole_name is not None):
            raise ValueError(f"whole-text vectors {'given' if whole is not None else 'missing'} for {self.collection}")
        docs: list[dict[str, Any]] = []
        parts: list[dict[str, Any]] = []
        for n, (content_hash, segments, vectors) in enumerate(items):
            d, p = _item_rows(content_hash, segments, vectors, None if whole is None else whole[n])
            docs += d
            if self.local is None:
                parts += p
        return docs, parts

    def upsert_many(self, items: Sequence[StoreItem], whole: Sequence[np.ndarray] | None = None) -> None:
        docs, parts = self._rows(items, whole)
        hashes = [h for h, _, _ in items]

        if self.local is not None:
            # A Milvus Lite delete by filter costs ~70 ms even when it matches nothing; new contents (most of a
            # run) have nothing to delete, and the local index mirrors what Milvus has.
            hashes = self.local.known(hashes)

        def write() -> None:
            # Delete first: a content may now have fewer segments than before.
            self._delete_locked(hashes)
            if docs:
                self.client.insert(self.collection, docs, timeout=self.timeout)
            if parts:
                self.client.insert(self.parts, parts, timeout=self.timeout)

        with self._lock:
            self._call("upsert", write)
            if self.local is not None:
                self.local.replace(items, whole)
            self._unflushed += len(docs) + len(parts)
            if self._unflushed >= self.flush_rows:
                self._call("flush", self._flush_locked)

    def _delete_locked(self, hashes: Sequence[str]) -> None:
        for i in range(0, len(hashes), 200):
            chunk = hashes[i : i + 200]
            quoted = ", ".join(f'"{h}"' for h in chunk if h.isalnum())
            if quoted:
                for name in self._collections():
                    self.client.delete(name, filter=f"content_hash in [{quoted}]", timeout=self.timeout)

    def delete(self, hashes: Sequence[str]) -> None:
        if self.local is not None:
            hashes = self.local.known(hashes)
        if not hashes:
            return
        with self._lock:
            self._call("delete", lambda: self._delete_locked(hashes))
            if self.local is not None:
                self.local.delete(hashes)
            self._unflushed += len(hashes)

    def purge(self, hashes: Sequence[str]) -> None:
        """Delete the rows of ``hashes`` from Milvus and the local index, even rows only Milvus has
        (``delete`` skips what the local index doesn't know; ``pixgrep doctor --repair`` needs this)."""
        if not hashes:
            return
        with self._lock:
            self._call("delete", lambda: self._delete_locked(hashes))
            if self.local is not None:
                self.local.delete(hashes)
            self._unflushed += len(hashes)

    def _flush_locked(self) -> None:
        for name in self._collections():
            self.client.flush(name, timeout=self.timeout)
        self._unflushed = 0

    def flush(self) -> None:
        with self._lock:
            if self._unflushed:
                try:
                    self._flush_locked()
                except Exception as e:
                    raise _wrap(e, "flush") from e

    # Reads ---------------------------------------------------------------
    def _hits(self, res: Any, absolute: bool) -> list[Hit]:
        out = []
        for r in res[0] if res else []:
            ent = r.get("entity", {})
            score = float(r["distance"])
            out.append(
                Hit(
                    content_hash=ent["content_hash"],
                    kind=ent.get("kind", ""),
                    source=ent.get("source", ""),
                    text=ent.get("text", ""),
                    score=abs(score) if absolute else score,
                )
            )
        return out

    def _dense_params(self, limit: int) -> dict[str, Any]:
        params: dict[str, Any] = {"metric_type": self.metric}
        if self.index_type == "HNSW":
            # HNSW returns at most ef candidates, so the beam is at least the limit.
            params["params"] = {"ef": max(self.params.hnsw_ef, limit)}
        return params

    # Reads take no store lock: MilvusClient is thread-safe, and the local index has its own.
    def search_dense(self, vector: np.ndarray, limit: int) -> list[Hit]:
        if self.local is not None:
            return self.local.search(vector, limit)
        hits: list[Hit] = []
        for name in (self.collection, self.parts):
            res = self._call(
                "search",
                lambda name=name: self.client.search(  # type: ignore[misc]
                    name,
                    data=[np.asarray(vector, dtype=np.float32).tolist()],
                    anns_field="dense",
                    limit=limit,
                    output_fields=self.OUTPUT,
                    search_params=self._dense_params(limit),
                    consistency_level=self.params.search_consistency,
                    timeout=self.timeout,
                ),
            )
            hits += self._hits(res, absolute=False)
        return sorted(hits, key=lambda h: -h.score)[:limit]

    def search_whole(self, vector: np.ndarray, limit: int) -> list[Hit]:
        if self.whole_name is None or limit <= 0:
            return []
        if self.local is not None:
            return self.local.search_whole(vector, limit)
        res = self._call(
            "search",
            lambda: self.client.search(
                self.collection,
                data=[np.asarray(vector, dtype=np.float32).tolist()],
                anns_field="whole",
                limit=limit,
                output_fields=self.OUTPUT,
                search_params=self._dense_params(limit),
                consistency_level=self.params.search_consistency,
                timeout=self.timeout,
            ),
        )
        return self._hits(res, absolute=False)

    def search_keyword(self, tokens: str, limit: int) -> list[Hit]:
        if not tokens.strip():
            return []
        if self.local is not None:
            return self.local.search_keyword(tokens, limit)
        res = self._call(
            "keyword search",
            lambda: self.client.search(
                self.collection,
                data=[tokens],
                anns_field="sparse",
                limit=limit,
                output_fields=self.OUTPUT,
                search_params={"metric_type": "BM25"},
                consistency_level=self.params.search_consistency,
                timeout=self.timeout,
            ),
        )
        # Milvus Lite returns BM25 scores negated (best = most negative); BM25 itself is >= 0.
        hits = self._hits(res, absolute=True)
        return [h for h in hits if h.score > 0]

    def _count(self, name: str) -> int:
        res = self._call(
            "count",
            lambda: self.client.query(
                name, filter="", output_fields=["count(*)"], consistency_level="Strong", timeout=self.timeout
            ),
        )
        return int(res[0]["count(*)"])

    def count(self) -> int:
        """Rows in Milvus, both collections."""
        with self._lock:
            return sum(self._count(name) for name in self._collections())

    def segments_per_content(self) -> dict[str, int]:
        """How many segments each content hash has (Milvus's documents and, with Lite, the local parts)."""
        out: dict[str, int] = {}
        with self._lock:
            self.flush()
            for rows in self._iter_rows(["content_hash"]):
                for r in rows:
                    out[r["content_hash"]] = out.get(r["content_hash"], 0) + 1
            if self.local is not None:
                for h, n in self.local.parts_per_content().items():
                    out[h] = out.get(h, 0) + n
        return out

    def probe(self) -> None:
        """Raise StoreUnavailable unless the store answers now, on a fresh connection.

        gRPC reconnects a broken channel with its own backoff (up to minutes after a long
        outage), so the probe opens a new client and, once it answers, uses it from then on.
        """
        from pymilvus import MilvusClient

        try:
            # dedicated: pymilvus would otherwise hand back the shared, broken channel.
            fresh = MilvusClient(
                uri=self._client_uri, token=self._token, timeout=min(self.timeout, 3.0), dedicated=True
            )
        except Exception as e:
            raise _wrap(e, f"connection to {self.uri}") from e
        try:
            fresh.has_collection(self.collection, timeout=min(self.timeout, 3.0))
        except Exception as e:
            fresh.close()
            raise _wrap(e, "probe") from e
        with self._lock:
            old, self.client = self.client, fresh
        try:
            old.close()
        except Exception as e:  # the old channel is broken anyway
            log.debug("closing the old Milvus connection: %s", e)

    def close(self) -> None:
        with self._lock:
            try:
                self.flush()
            except StoreUnavailable as e:
                # Unreachable now: nothing to gain by failing the close. What was inserted but not flushed
                # is in Milvus's own write-ahead log, and the next open flushes it.
                log.warning("closing without a flush: %s", e)
            finally:
                self.client.close()
                if self.local is not None:
                    try:
                        # For a search while no daemon runs (a stale or missing one only costs it time).
                        self.local.snapshot()
                    except (OSError, RuntimeError) as e:
                        log.warning("cannot write the vector snapshot %s: %s", self.local.snapshot_path, e)
                    self.local.close()
                if self._lite_data is not None:
                    litehost.release(self._lite_data)
                    self._lite_data = None


class StoreFactory(Protocol):
    """Opens the store for an embedder; ``recreate`` drops what it held (``reindex --embeddings``)."""

    def __call__(self, settings: Any, *, embed_name: str, dim: int, recreate: bool = False) -> VectorStore: ...


def local_path(uri: str, collection: str) -> Path:
    """Where the local index beside a Milvus Lite file lives."""
    return Path(uri).parent / f"{Path(uri).stem}.{collection}.vectors.sqlite"


class LocalReader:
    """Searches the local index beside Milvus Lite read-only, without opening Milvus (no daemon running)."""

    def __init__(self, local: LocalDenseIndex) -> None:
        self.local = local

    def search_dense(self, vector: np.ndarray, limit: int) -> list[Hit]:
        return self.local.search(vector, limit)

    def search_keyword(self, tokens: str, limit: int) -> list[Hit]:
        return self.local.search_keyword(tokens, limit)

    def search_whole(self, vector: np.ndarray, limit: int) -> list[Hit]:
        return self.local.search_whole(vector, limit)

    def count(self) -> int:
        return self.local.count()

    def close(self) -> None:
        self.local.close()


def open_reader(settings: Any, *, embed_name: str, dim: int) -> LocalReader | None:
    """A read-only searcher of the local index, if this configuration has one that is complete; else None."""
    import sqlite3

    from pixgrep.localdense import LocalDenseIndex

    uri = settings.milvus_uri
    if not is_lite_uri(uri):
        return None
    path = local_path(uri, settings.milvus.collection)
    if not path.exists():
        return None
    whole = whole_identity(settings)
    try:
        local = LocalDenseIndex(
            path, dim, readonly=True, whole_dim=whole[1] if whole else 0, ann_probes=settings.search.ann_probes
        )
    except sqlite3.Error:
        return None
    if not local.usable(embed_name, whole[0] if whole else None):
        local.close()
        return None
    return LocalReader(local)


def whole_identity(settings: Any) -> tuple[str, int] | None:
    """(name, dim) of the whole-text model ``embed.whole_backend``, without loading it; None without one."""
    from pixgrep.stages import EMBED, embedder_identity

    backend = settings.embed.whole_backend
    if not backend:
        return None
    known = embedder_identity(backend)
    if known is not None:
        return known
    e = EMBED.create(backend, model=settings.embed.model, device=settings.embed.device)
    return e.name, e.dim


def open_store(settings: Any, *, embed_name: str, dim: int, recreate: bool = False) -> MilvusStore:
    return MilvusStore(
        settings.milvus_uri,
        collection=settings.milvus.collection,
        embed_name=embed_name,
        dim=dim,
        token=settings.milvus.token,
        timeout=settings.milvus.timeout,
        flush_rows=settings.milvus.flush_rows,
        recreate=recreate,
        params=IndexParams(
            index=settings.milvus.index,
            hnsw_m=settings.milvus.hnsw_m,
            hnsw_ef_construction=settings.milvus.hnsw_ef_construction,
            hnsw_ef=settings.milvus.hnsw_ef,
            search_consistency=settings.milvus.search_consistency,
            local_ann_rows=settings.search.ann_rows,
            local_ann_probes=settings.search.ann_probes,
        ),
        whole=whole_identity(settings),
    )
