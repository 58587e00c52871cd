"""The index pipeline: prepare -> OCR -> caption -> segment -> embed -> write, then the books.

``Pipeline.process`` takes a list of paths and is shared by ``pixgrep index``
and the daemon's worker loop. ``prepare`` stats and hashes a file and links
bytes the books already know; the rest run on typed batches
(``pixgrep.batches``: ``Pending`` -> ``Analysed`` -> ``Segmented`` ->
``Embedded``). OCR runs in worker processes (one engine per core); captioning
and embedding run batched in the calling process, where the GPU is, if there is
one. ``refresh`` re-runs the stages after OCR on what the books hold. Every SQL
statement is in ``pixgrep.catalog``; the order of store and book writes is
described there.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from pixgrep import batches as stage
from pixgrep import images, textnorm
from pixgrep.batches import Analysed, Pending
from pixgrep.catalog import Catalog, Content, ContentStatus, Indexed, OutcomeStatus, Refreshed
from pixgrep.errors import PermanentError, RetryableError, StoreUnavailable
from pixgrep.ocrpool import Analysis, OcrPool
from pixgrep.roots import is_key, split_key
from pixgrep.settings import Settings
from pixgrep.stages import CAPTION, EMBED, BackendUnavailable, Captioner, Embedder, OcrLine
from pixgrep.store import StoreFactory, VectorStore, open_store

log = logging.getLogger("pixgrep.pipeline")


# --------------------------------------------------------------------------
# The pipeline


@dataclass
class Outcome:
    path: str
    status: OutcomeStatus
    content_hash: str | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        self.status = OutcomeStatus(self.status)  # a plain string is accepted, and checked


ProgressFn = Callable[[Outcome], None]


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        db: Catalog,
        *,
        store: VectorStore | None = None,
        embedder: Embedder | None = None,
        ocr_workers: int | None = None,
        store_factory: StoreFactory = open_store,
    ) -> None:
        self.settings = settings
        self.db = db
        self._embedder = embedder
        self._whole_embedder: Embedder | None = None
        self._store = store
        self._open_store = store_factory
        self._captioner: Captioner | None = None
        self._captioner_error: str | None = None
        self.ocr_pool = OcrPool(settings, ocr_workers)
        # Set by process() when the store failed during the run (the worker pauses on it).
        self.store_error: StoreUnavailable | None = None
        self._lock = threading.RLock()
        # (owner, seconds) when several daemons share the books: new bytes are leased before OCR.
        self.lease: tuple[str, float] | None = None

    # Lazily loaded stages -------------------------------------------------
    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._create_embedder(self.settings.embed.backend)
            return self._embedder

    @property
    def whole_embedder(self) -> Embedder | None:
        """The second model, for whole texts and captions only (``embed.whole_backend``); None without one."""
        e = self.settings.embed
        if not e.whole_backend:
            return None
        with self._lock:
            if self._whole_embedder is None:
                self._whole_embedder = self._create_embedder(e.whole_backend)
            return self._whole_embedder

    def _create_embedder(self, backend: str) -> Embedder:
        e = self.settings.embed
        return EMBED.create(
            backend,
            model=e.model,
            device=e.device,
            batch_size=e.batch_size,
            # OCR processes fill every core: more BLAS threads would only spin.
            threads=1 if self.ocr_pool.throughput else 0,
        )

    def warm_embedders(self) -> None:
        """Load the embedders' weights, not just their tokenizers (the whole-text model's too, if any)."""
        self.embedder.embed(["warm up"])
        if self.whole_embedder is not None:
            self.whole_embedder.embed(["warm up"])

    def has_store(self) -> bool:
        return self._store is not None

    def embedder_identity(self) -> tuple[str, int]:
        """The embedder's name and dimension, without loading its model where its class declares them."""
        with self._lock:
            if self._embedder is None:
                cls = EMBED.factory(self.settings.embed.backend)
                name, dim = getattr(cls, "name", None), getattr(cls, "dim", None)
                if isinstance(name, str) and isinstance(dim, int):
                    return name, dim
            return self.embedder.name, self.embedder.dim

    @property
    def store(self) -> VectorStore:
        with self._lock:
            if self._store is None:
                self._store = self._open_store(self.settings, embed_name=self.embedder.name, dim=self.embedder.dim)
                if self._store.unembedded:
                    missing, self._store.unembedded = self._store.unembedded, []
                    log.warning("re-embedding %d contents whose OCR lines the local index lost", len(missing))
                    self.refresh(missing, recaption=False)
            return self._store

    @property
    def captioner(self) -> Captioner | None:
        c = self.settings.caption
        if not c.model or self._captioner_error:
            return None
        with self._lock:
            if self._captioner is None:
                try:
                    self._captioner = CAPTION.create(
                        c.backend,
                        model=c.model,
                        device=c.device,
                        batch_size=c.batch_size,
                        num_beams=c.num_beams,
                        max_new_tokens=c.max_new_tokens,
                        num_captions=c.num_captions,
                        temperature=c.temperature,
                    )
                except BackendUnavailable as e:
                    # Optional stage: index without captions; `reindex --stale` adds them later.
                    self._captioner_error = str(e)
                    log.error("captioner unavailable, indexing without captions: %s", e)
                    return None
            return self._captioner

    def rebuild_store(self) -> None:
        """Drop and recreate the vector collection for the current embedder."""
        with self._lock:
            if self._store is not None:
                self._store.close()
            self._store = self._open_store(
                self.settings, embed_name=self.embedder.name, dim=self.embedder.dim, recreate=True
            )

    def unload_models(self) -> None:
        """Give model memory back (idle unload); stages reload on next use."""
        with self._lock:
            if self._captioner is not None and hasattr(self._captioner, "unload"):
                self._captioner.unload()
            self.ocr_pool.restart()

    def ocr_fingerprint(self) -> str:
        o = self.settings.ocr
        langs = f" {o.languages}" if o.engine == "tesseract" else ""
        return f"{o.engine}{langs} det={o.det_limit_side_len}-{o.det_max_short_side} conf={o.min_confidence}"

    def caption_fingerprint(self) -> str:
        c = self.settings.caption
        return f"{c.model} beams={c.num_beams} n={c.num_captions} t={c.temperature} max={c.max_new_tokens}"

    def embed_fingerprint(self) -> str:
        w = self.whole_embedder
        whole = f" whole={w.name} dim={w.dim}" if w is not None else ""
        return f"{self.embedder.name} dim={self.embedder.dim}{whole}"

    def versions(self, ocr_version: str, captioned: bool) -> dict[str, str]:
        """What produced an item, per stage; `reindex --stale` compares these with the settings."""
        v = {
            "ocr": ocr_version,
            "ocr_cfg": self.ocr_fingerprint() if ocr_version else "",
            "embed": f"{self.embedder.name} {self.embedder.version}" + self._whole_version(),
            "embed_cfg": self.embed_fingerprint(),
            "keyword": textnorm.TOKENIZER_VERSION,
            "policy": self.settings.pipeline.policy,
        }
        if captioned and self._captioner is not None:
            v["caption"] = self._captioner.version
            v["caption_cfg"] = self.caption_fingerprint()
        return v

    def _whole_version(self) -> str:
        w = self.whole_embedder
        return f"; whole {w.name} {w.version}" if w is not None else ""

    def wants_caption(self, n_chars: int) -> bool:
        policy = self.settings.pipeline.policy
        if not self.settings.caption.model or policy == "ocr":
            return False
        return policy in ("caption", "both") or n_chars < self.settings.pipeline.min_text_chars

    def stale_stages(self, content: Content) -> set[str]:
        """Which stages of a done item no longer match the settings: ocr, caption, embed.

        A change of keyword tokenizer counts as ``embed``: its rows are rebuilt from the
        stored OCR lines (no OCR), which re-cuts their keyword text.
        """
        v = content.versions
        stale: set[str] = set()
        wants_ocr = self.settings.pipeline.policy != "caption"
        if wants_ocr and v.get("ocr_cfg") != self.ocr_fingerprint():
            stale.add("ocr")
        if self.wants_caption(len(content.text.replace("\n", ""))):
            if v.get("caption_cfg") != self.caption_fingerprint():
                stale.add("caption")
        elif v.get("caption_cfg"):
            stale.add("caption")  # captions are no longer wanted: drop them
        if v.get("embed_cfg") != self.embed_fingerprint() or v.get("keyword") != textnorm.TOKENIZER_VERSION:
            stale.add("embed")
        return stale

    # Stages after OCR, shared by process and refresh ------------------------------
    def _caption(self, batch: Sequence[Analysed], load: Callable[[Analysed], bytes | None]) -> list[Analysed]:
        return stage.caption(
            batch,
            self.captioner if self.settings.pipeline.policy != "ocr" else None,
            wants=self.wants_caption,
            load=load,
            max_megapixels=self.settings.image.max_megapixels,
        )

    def _embed_and_write(self, batch: Sequence[Analysed]) -> None:
        """segment -> embed -> write to the store; raises StoreUnavailable."""
        stage.write(stage.embed(stage.segment(batch), self.embedder, self.whole_embedder), self.store)

    # Refresh: re-embed (and re-caption) from the books, no OCR -----------------------
    def refresh(self, hashes: Sequence[str], *, recaption: bool) -> int:
        """Re-embed (and optionally re-caption) contents from their stored OCR lines; no OCR."""
        done = 0
        size = self.settings.pipeline.batch_size
        for i in range(0, len(hashes), size):
            rows = self.db.with_a_path(hashes[i : i + size])
            stored = {c.hash: c.versions for c, _ in rows}
            batch = [_from_books(c, path, keep_captions=not recaption) for c, path in rows]
            if recaption:
                batch = self._caption(batch, load=_reread)
            self._embed_and_write(batch)
            done += self.db.record_refreshed([self._refreshed(a, stored[a.digest]) for a in batch])
        self.store.flush()
        return done

    def _refreshed(self, a: Analysed, old: dict[str, str]) -> Refreshed:
        captioned = bool(a.captions) or a.captioned
        v = self.versions(a.analysis.ocr_version, captioned)
        v["ocr_cfg"] = old.get("ocr_cfg", "")
        if captioned and not a.captioned:  # kept captions keep the versions that made them
            v["caption"] = old.get("caption", "")
            v["caption_cfg"] = old.get("caption_cfg", "")
        return Refreshed(a.digest, list(a.captions), a.source, v)

    # Main entry -------------------------------------------------------------
    def process(
        self,
        paths: Iterable[str | tuple[str, str | None]],
        *,
        progress: ProgressFn | None = None,
        force: bool = False,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[Outcome]:
        """Index ``paths`` (optionally paired with their root). Never raises for one bad file.

        When ``should_stop`` turns true the run ends early: OCR not started yet is cancelled, what
        was OCR'd is kept in the books, and the paths not reached get no outcome. When the store
        fails, ``store_error`` says so and the remaining paths come back as RETRY without new OCR.
        """
        run = _Run(self, progress, should_stop)
        self.store_error = None
        items = [item if isinstance(item, tuple) else (item, None) for item in paths]
        unchanged = {} if force else self.db.settled_stats([p for p, _ in items])
        try:
            for path, root in items:
                if should_stop is not None and should_stop():
                    run.cancel_queued()
                    break
                if run.store_error is not None:
                    # The store is down: no OCR for work that cannot be stored now.
                    run.done(Outcome(path, OutcomeStatus.RETRY, None, str(run.store_error)))
                else:
                    run.take(self._prepare(path, root, force, unchanged.get(path)))
            run.drain(0)
            run.finish()
        finally:
            run.close()
            self.store_error = run.store_error
        return run.outcomes

    def _warm_stages(self) -> None:
        try:
            self.warm_embedders()
            self.store  # noqa: B018
        except Exception as e:  # the batch that needs them meets the same error and records it
            log.debug("warming the embedder and store failed: %s", e)

    def _prepare(
        self,
        path: str,
        root: str | None,
        force: bool,
        known: tuple[int, int, int, str, str | None] | None = None,
    ) -> Outcome | Pending | Analysed:
        """Stat and hash; link known content. An outcome if nothing more is needed; the kept OCR if a
        run that did not reach the store left it.

        ``known`` is the path's booked stat when its content is settled (from
        ``Catalog.settled_stats``): a matching stat means unchanged, with no read.
        """
        st = self._stat(path, root)
        if isinstance(st, Outcome):
            return st
        if known is not None and known[:3] == (st.st_size, st.st_mtime_ns, st.st_ino):
            return Outcome(path, OutcomeStatus.UNCHANGED, known[3], known[4])
        try:
            fb = images.read_file(path)
        except PermanentError as e:
            self._path_error(path, root, str(e), failed_at=st)
            return Outcome(path, OutcomeStatus.FAILED, None, str(e))
        except RetryableError as e:
            if "vanished" in str(e):
                self.remove_paths([path])
            else:
                self._path_error(path, root, str(e))
            return Outcome(path, OutcomeStatus.RETRY, None, str(e))
        # Leased before the books are asked: the daemon that held the lease has recorded the bytes
        # by the time it lets go, so they are found settled here instead of OCR'd twice.
        if not self._leased(fb.digest):
            # A copy or a rename of bytes another daemon is OCR'ing: link them once it is done.
            return Outcome(path, OutcomeStatus.BUSY, fb.digest, "another daemon is reading these bytes")
        content = None if force else self.db.content(fb.digest)
        if content is not None and content.settled:
            return self._link_known(content, path, root, fb)
        return self._kept_ocr(content, Pending(path, root, fb))

    def _stat(self, path: str, root: str | None) -> os.stat_result | Outcome:
        """The file's stat, or the outcome of a path that cannot be read here."""
        if is_key(path):
            # A named root this host does not mount: another host's to read (never "vanished" here).
            name = (split_key(path) or (path, ""))[0]
            return Outcome(path, OutcomeStatus.RETRY, None, f"root {name!r} is not mounted on this host")
        try:
            return os.stat(path)
        except FileNotFoundError:
            self.remove_paths([path])
            return Outcome(path, OutcomeStatus.FAILED, None, "file vanished")
        except OSError as e:
            msg = "symlink loop" if e.errno == 40 else (e.strerror or str(e))
            self._path_error(path, root, msg)
            return Outcome(path, OutcomeStatus.FAILED, None, msg)

    def _link_known(self, content: Content, path: str, root: str | None, fb: images.FileBytes) -> Outcome:
        """Point ``path`` at bytes the books know. Other names of these bytes that are gone from disk go:
        a rename seen late may have carried a name along that a later rename already replaced."""
        self._release([fb.digest])
        self._forget(self.db.link([stage.link_of(path, root, fb)]))
        gone = [q for q in self.db.paths_of([fb.digest]) if q != path and not is_key(q) and not os.path.lexists(q)]
        if gone:
            self.remove_paths(gone)
        status = OutcomeStatus.LINKED if content.status == ContentStatus.DONE else OutcomeStatus.FAILED
        return Outcome(path, status, fb.digest, content.error)

    def _kept_ocr(self, content: Content | None, item: Pending) -> Pending | Analysed:
        """The OCR of a content kept by an earlier run that did not reach the store (same OCR settings);
        else the item, to OCR."""
        if content is None or content.status != ContentStatus.PENDING:
            return item
        v = content.versions
        if not v.get("ocr") or v.get("ocr_cfg") != self.ocr_fingerprint():
            return item
        lines = [OcrLine.from_json(d) for d in content.lines]
        analysis = Analysis(content.hash, content.width or 0, content.height or 0, lines, ocr_version=v["ocr"])
        return Analysed(item, analysis)

    def _keep_ocr(self, a: Analysed) -> None:
        """Commit one image's OCR as it arrives, not with its batch: a crash loses only what is in flight."""
        if not a.analysis.ocr_version:
            return  # no OCR ran (policy "caption"): nothing worth keeping
        kept = self._indexed(a)
        self._forget(self.db.record_ocr([kept]))

    def _leased(self, digest: str) -> bool:
        """Whether this process may OCR ``digest`` (always, unless several daemons share the books)."""
        if self.lease is None:
            return True
        owner, seconds = self.lease
        now = time.time()
        return self.db.lease_content(digest, owner, now + seconds, now)

    def _release(self, digests: Sequence[str]) -> None:
        if self.lease is not None and digests:
            self.db.release_content_leases(self.lease[0], digests)

    def _path_error(self, path: str, root: str | None, msg: str, *, failed_at: os.stat_result | None = None) -> None:
        """Record an error of the path itself. ``failed_at``: the stat of bytes that failed for good (an empty
        file): the rescan then leaves the path alone until its stat changes. A passing error records no stat,
        so the path is tried again (``catalog.path_settled``)."""
        log.warning("%s", msg, extra={"file": path})
        stat = (failed_at.st_size, failed_at.st_mtime_ns, failed_at.st_ino) if failed_at else None
        self.db.record_path_error(path, root, msg, failed_at=stat)

    def _fail_content(self, item: Pending, msg: str, *, retryable: bool, quiet: bool = False) -> None:
        if not quiet:
            log.warning("%s", msg, extra={"file": item.path})
        orphans = self.db.record_failure(
            item.digest,
            msg,
            retryable=retryable,
            max_attempts=self.settings.pipeline.max_attempts,
            links=item.links(),
        )
        self._release([item.digest])
        self._forget(orphans)

    def _finish(self, batch: Sequence[Analysed]) -> list[Outcome]:
        """caption -> segment -> embed -> write, then record in the books (vectors first)."""
        batch = self._caption(batch, load=lambda a: a.item.fb.data)
        # StoreUnavailable goes to the run: the batch's OCR is already kept, no attempt is counted.
        self._embed_and_write(batch)
        self._forget(self.db.record_indexed([self._indexed(a) for a in batch]))
        self._release([a.digest for a in batch])
        return [
            Outcome(path, OutcomeStatus.INDEXED if path == a.item.path else OutcomeStatus.LINKED, a.digest)
            for a in batch
            for path in a.item.paths()
        ]

    def _indexed(self, a: Analysed) -> Indexed:
        return Indexed(
            digest=a.digest,
            lines=[ln.to_json() for ln in a.analysis.lines],
            captions=list(a.captions),
            width=a.analysis.width,
            height=a.analysis.height,
            source=a.source,
            versions=self.versions(a.analysis.ocr_version, a.captioned),
            links=a.item.links(),
        )

    # Removal and moves ---------------------------------------------------------
    def _forget(self, orphans: Sequence[str]) -> list[str]:
        """After the books committed a path change: delete the orphans' vectors, then their rows.

        The order is the catalog's "decide, commit, then act": a crash or a Milvus outage
        here leaves orphan rows (invisible to search) that ``purge_orphans`` finishes.
        """
        if not orphans:
            return []
        try:
            self.store.delete(orphans)
        except StoreUnavailable as e:
            log.warning("vectors of %d removed images kept for later deletion: %s", len(orphans), e)
            return []
        return self.db.delete_orphans(orphans)

    def purge_orphans(self) -> int:
        """Delete contents (and vectors) that no path points at, left by a Milvus outage or a crash."""
        return len(self._forget(self.db.orphans()))

    def remove_paths(self, paths: Sequence[str]) -> int:
        """Forget paths; vectors go with the last path of a content."""
        n, orphans = self.db.remove_paths(paths)
        self._forget(orphans)
        return n

    def remove_tree(self, directory: str, keep: Sequence[str] = ()) -> int:
        """Forget every path under ``directory`` except those under a folder in ``keep``."""
        prefixes = tuple(k.rstrip("/") + "/" for k in keep)
        return self.remove_paths([p for p in self.db.paths_under(directory) if not p.startswith(prefixes)])

    def move(self, src: str, dst: str, root: str | None = None) -> bool:
        """Record a rename without re-reading content. False if ``src`` was unknown."""
        try:
            st = os.stat(dst)
            size, mtime_ns, inode = st.st_size, st.st_mtime_ns, st.st_ino
        except OSError:
            # Moved on again since (a folder renamed twice in a row): carry the booked record along
            # under its booked stat, so the next move finds it here instead of indexing it again.
            entry = self.db.path_entry(src)
            if entry is None or os.path.lexists(src):
                return False
            size, mtime_ns, inode = entry.size, entry.mtime_ns, entry.inode
        orphans = self.db.move(src, dst, size=size, mtime_ns=mtime_ns, inode=inode, root=root)
        if orphans is None:
            return False
        self._forget(orphans)
        return True

    def carry(self, src: str, dst: str, root: str | None) -> int:
        """``src`` (a file or a folder) was renamed to ``dst``, which is gone too: it moved on again.

        Paths whose bytes are also booked under another name (a later move already linked them) are
        dropped; the others, the last name of their bytes, move to ``dst`` in the books so the next
        move finds them there instead of the bytes being OCR'd again. Returns how many moved.
        """
        paths = [src, *self.db.paths_under(src)]
        prefix = src.rstrip("/") + "/"
        moved, drop = 0, []
        for path in paths:
            entry = self.db.path_entry(path)
            if entry is None or entry.content_hash is None:
                continue
            elsewhere = [q for q in self.db.paths_of([entry.content_hash]) if q != src and not q.startswith(prefix)]
            if elsewhere:
                drop.append(path)
            elif self.move(path, dst.rstrip("/") + path[len(src.rstrip("/")) :], root):
                moved += 1
        self.remove_paths(drop)
        return moved

    def move_tree(self, src_dir: str, dst_dir: str) -> int:
        n = 0
        for p in self.db.paths_under(src_dir):
            if self.move(p, dst_dir.rstrip("/") + p[len(src_dir.rstrip("/")) :]):
                n += 1
        return n

    def retry_pending_contents(self) -> list[str]:
        """Paths whose content is waiting for a retry (e.g. Milvus was down)."""
        return self.db.retry_pending_paths()

    def reset_failed(self) -> None:
        self.db.reset_failed()

    def flush(self) -> None:
        """Flush the store if this run opened it (a run with nothing to write never does)."""
        if self._store is not None:
            self._store.flush()

    def close(self) -> None:
        self.ocr_pool.close()
        if self._store is not None:
            self._store.close()
            self._store = None


# --------------------------------------------------------------------------
# One run of process(): OCR futures in flight, the batch being filled


class _Run:
    def __init__(
        self, pipeline: Pipeline, progress: ProgressFn | None, should_stop: Callable[[], bool] | None = None
    ) -> None:
        self.p = pipeline
        self.progress = progress
        self.should_stop = should_stop or (lambda: False)
        self.outcomes: list[Outcome] = []
        self.batch: list[Analysed] = []
        self.inflight: dict[cf.Future[Analysis], Pending] = {}
        self.seen: dict[str, Pending] = {}
        self.warm: threading.Thread | None = None
        # Deep enough that the OCR processes keep working while this thread embeds and
        # upserts a finished batch (about a second for 32 images).
        self.max_inflight = max(4, pipeline.ocr_pool.workers * 8)
        self.need_ocr = pipeline.settings.pipeline.policy != "caption"
        self.store_error: StoreUnavailable | None = None

    def done(self, *outcomes: Outcome) -> None:
        for o in outcomes:
            self.outcomes.append(o)
            if self.progress:
                self.progress(o)

    def submit(self, item: Pending) -> None:
        first = self.seen.get(item.digest)
        if first is not None:
            # The same bytes twice in one run: linked when the first is done.
            first.add_dup(item.path, item.root, item.fb)
            return
        self.seen[item.digest] = item
        pool = self.p.ocr_pool
        self.inflight[pool.submit(item.digest, item.fb.data, self.need_ocr)] = item
        if self.warm is None and pool.workers:
            # Load the embedder and open the store while the OCR processes work,
            # not after the first batch is read (seconds of idle cores otherwise).
            self.warm = threading.Thread(target=self.p._warm_stages, name="pixgrep-warm", daemon=True)
            self.warm.start()
        self.drain(self.max_inflight)

    def fail(self, item: Pending, msg: str, *, retryable: bool) -> None:
        self.p._fail_content(item, msg, retryable=retryable)
        status = OutcomeStatus.RETRY if retryable else OutcomeStatus.FAILED
        self.done(*(Outcome(path, status, item.digest, msg) for path in item.paths()))

    def _ocr(self, fut: cf.Future[Analysis], item: Pending) -> None:
        """The OCR stage's result for one item: into the batch, or failed."""
        try:
            analysis = fut.result()
        except cf.process.BrokenProcessPool:
            self.p.ocr_pool.restart()
            return self.fail(item, "OCR worker crashed on this image", retryable=True)
        except Exception as e:  # an engine bug must not stop the run
            log.exception("OCR failed", extra={"file": item.path})
            return self.fail(item, f"OCR error: {e}", retryable=True)
        if analysis.error:
            return self.fail(item, analysis.error, retryable=False)
        a = Analysed(item, analysis)
        self.p._keep_ocr(a)
        self._batch(a)

    def take(self, got: Outcome | Pending | Analysed) -> None:
        """What prepare made of one path: an outcome, bytes to OCR, or OCR kept by an earlier run."""
        if isinstance(got, Outcome):
            self.done(got)
        elif isinstance(got, Analysed):
            self.add(got)
        else:
            self.submit(got)

    def add(self, a: Analysed) -> None:
        """An item whose OCR an earlier run kept: straight to the batch."""
        first = self.seen.get(a.digest)
        if first is not None:
            first.add_dup(a.item.path, a.item.root, a.item.fb)
            return
        self.seen[a.digest] = a.item
        self._batch(a)

    def _batch(self, a: Analysed) -> None:
        self.batch.append(a)
        if len(self.batch) >= self.p.settings.pipeline.batch_size:
            self.finish()

    def cancel_queued(self) -> list[Pending]:
        """Cancel the OCR not started yet; returns its items (their paths get no outcome here)."""
        cancelled = [item for fut, item in list(self.inflight.items()) if fut.cancel()]
        self.inflight = {f: it for f, it in self.inflight.items() if not f.cancelled()}
        return cancelled

    def drain(self, block_until: int) -> None:
        while len(self.inflight) > block_until:
            if block_until and self.should_stop():
                return  # the caller cancels what has not started, then drains the rest
            # Wake twice a second while feeding the pool: a stop request need not wait for an OCR.
            timeout = 0.5 if block_until else None
            finished, _ = cf.wait(list(self.inflight), timeout=timeout, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                self._ocr(fut, self.inflight.pop(fut))

    def finish(self) -> None:
        if not self.batch:
            return
        batch, self.batch = self.batch, []
        if self.store_error is None:
            try:
                self.done(*self.p._finish(batch))
                return
            except StoreUnavailable as e:
                # One cause for the whole run: one log line, not one per file; stop feeding OCR.
                log.warning("%s (%d files wait for it, their OCR kept)", e, len(batch))
                self.store_error = e
                for item in self.cancel_queued():
                    self.done(*(Outcome(p, OutcomeStatus.RETRY, item.digest, str(e)) for p in item.paths()))
        err = str(self.store_error)
        self.done(*(Outcome(p, OutcomeStatus.RETRY, a.digest, err) for a in batch for p in a.item.paths()))

    def close(self) -> None:
        if self.warm is not None:
            self.warm.join()


def _from_books(content: Content, path: str, *, keep_captions: bool) -> Analysed:
    """A stored content as the caption stage's input: its OCR lines, and its captions if kept."""
    lines = [OcrLine.from_json(d) for d in content.lines]
    analysis = Analysis(
        content.hash, content.width or 0, content.height or 0, lines, ocr_version=content.versions.get("ocr", "")
    )
    captions = content.captions if keep_captions and content.versions.get("caption_cfg") else []
    return Analysed(Pending(path, None, images.FileBytes(b"", content.hash, 0, 0, 0)), analysis, tuple(captions))


def _reread(a: Analysed) -> bytes | None:
    """The bytes of a stored content for re-captioning, if its path still holds them."""
    try:
        fb = images.read_file(a.item.path)
    except (PermanentError, RetryableError) as e:
        log.warning("cannot re-read for captioning: %s", e, extra={"file": a.item.path})
        return None
    return fb.data if fb.digest == a.digest else None
