"""Plain functions behind the CLI and the daemon's API (no click, no HTTP here)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pixgrep import scan
from pixgrep.catalog import Catalog, ContentStatus, OutcomeStatus
from pixgrep.errors import BooksUnavailable, StoreUnavailable
from pixgrep.pipeline import Outcome, Pipeline
from pixgrep.private import private_state
from pixgrep.search import Result
from pixgrep.search import search as _search
from pixgrep.settings import Settings
from pixgrep.store import LocalReader, Searcher, StoreFactory, open_reader, open_store

log = logging.getLogger("pixgrep.app")


def open_books(settings: Settings) -> Catalog:
    """The books, with this host's named roots (``[roots]``): rows an earlier run booked by absolute path
    under a root that has a name now are rewritten to its keys (``Catalog.use_mounts``)."""
    db = Catalog(settings.db_url)
    try:
        n = db.use_mounts(settings.root_map)
    except BaseException:
        db.close()
        raise
    if n:
        log.info("booked %d paths under their root's name", n)
    return db


class Index:
    """An open index: the catalog (SQLite books), the Milvus store and the stages, opened lazily."""

    def __init__(
        self,
        settings: Settings,
        *,
        ocr_workers: int | None = None,
        store_factory: StoreFactory = open_store,
        search_only: bool = False,
    ) -> None:
        """``search_only``: searches may read the local index beside Milvus Lite without opening Milvus
        (the CLI while no daemon runs); a process that also writes must see its own writes, so not there."""
        self.settings = settings
        private_state(settings.home)  # 0700 and a 0077 umask: Milvus Lite and the local index are private too
        self.search_only = search_only
        self.db = self._books(settings, search_only)
        self.pipeline = Pipeline(settings, self.db, ocr_workers=ocr_workers, store_factory=store_factory)
        self._reader: LocalReader | Literal[False] | None = None  # False: this index has none

    @staticmethod
    def _books(settings: Settings, search_only: bool) -> Catalog:
        try:
            return open_books(settings)
        except BooksUnavailable as e:
            from pixgrep.diskfull import no_room

            if not (search_only and settings.db_path.exists() and no_room(settings.db_path)):
                raise
            # A full disk: searches still answer from the books as they are (issue 9, defect 6).
            log.warning("%s; the disk is full: searching the index read-only", e)
            db = Catalog.read_only(settings.db_path)
            db.use_mounts(settings.root_map, adopt=False)
            return db

    def search(
        self,
        query: str,
        *,
        mode: str | None = None,
        limit: int | None = None,
        in_dir: str | None = None,
        all: bool = False,
        path_ok: Callable[[str], bool] | None = None,
        source: str | None = None,
    ) -> list[Result]:
        """Ranked results; in hybrid mode, those below the relevance floor (``search.min_score``) only with ``all``."""
        p = self.pipeline
        mode = mode or self.settings.search.mode
        use_dense = mode != "keyword"
        # The floor is calibrated on hybrid scores; a one-leg mode is asked for on purpose and shows its top k.
        return _search(
            query,
            store=self._search_store(),
            embedder=p.embedder if use_dense else None,
            whole_embedder=p.whole_embedder if use_dense else None,
            db=self.db,
            settings=self.settings.search,
            mode=mode,
            limit=limit,
            in_dir=in_dir,
            min_score=None if all or mode != "hybrid" else self.settings.search.min_score,
            path_ok=path_ok,
            source=source,
        )

    def _search_store(self) -> Searcher:
        """The open store, or else the local index read-only: a search alone need not open Milvus Lite."""
        p = self.pipeline
        if not self.search_only or p.has_store():
            return p.store
        if self._reader is None:
            name, dim = p.embedder_identity()
            self._reader = open_reader(self.settings, embed_name=name, dim=dim) or False
        return self._reader or p.store

    def close(self) -> None:
        if self._reader:
            self._reader.close()
        self.pipeline.close()
        self.db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class IndexReport:
    seen: int = 0
    indexed: int = 0
    linked: int = 0
    unchanged: int = 0
    failed: int = 0
    retry: int = 0
    removed: int = 0
    seconds: float = 0.0
    errors: list[tuple[str, str]] = field(default_factory=list)
    # The vector store failed after the files were processed (the final flush): the run still has a summary.
    store_error: str | None = None

    def add(self, o: Outcome) -> None:
        self.seen += 1
        setattr(self, o.status, getattr(self, o.status) + 1)
        if o.error and o.status in (OutcomeStatus.FAILED, OutcomeStatus.RETRY):
            self.errors.append((o.path, o.error))


def index_paths(
    index: Index,
    paths: Sequence[str],
    *,
    force: bool = False,
    on_total: Callable[[int], None] | None = None,
    on_outcome: Callable[[Outcome], None] | None = None,
) -> IndexReport:
    """Index files and folders incrementally; forget files gone from indexed folders."""
    t0 = time.monotonic()
    roots = [os.path.abspath(p) for p in paths]
    report = IndexReport()
    jobs, on_disk = _jobs(index, roots, report)
    if on_total:
        on_total(len(jobs))

    def progress(o: Outcome) -> None:
        report.add(o)
        if on_outcome:
            on_outcome(o)

    index.pipeline.purge_orphans()
    index.pipeline.process(jobs, progress=progress, force=force)
    # Forget what vanished from the folders just walked.
    for root in filter(os.path.isdir, roots):
        gone = [p for p in index.db.paths_under(root) if p not in on_disk and not os.path.exists(p)]
        report.removed += index.pipeline.remove_paths(gone)
    try:
        index.pipeline.flush()
    except StoreUnavailable as e:
        report.store_error = str(e)
    report.seconds = time.monotonic() - t0
    return report


def _jobs(index: Index, roots: list[str], report: IndexReport) -> tuple[list[tuple[str, str | None]], set[str]]:
    """(path, root) of every file to index under ``roots``, and the set of those paths."""
    flt = scan.FileFilter.from_settings(index.settings)
    jobs: list[tuple[str, str | None]] = []
    on_disk: set[str] = set()
    for root in roots:
        if not os.path.exists(root):
            report.errors.append((root, "no such file or folder"))
            report.failed += 1
            continue
        is_dir = os.path.isdir(root)
        for f in scan.walk([root], flt):
            jobs.append((f, root if is_dir else None))
            on_disk.add(f)
        if is_dir:
            index.db.add_roots([root])
    # Also retry contents that were left pending (Milvus down, crashed worker).
    for p in index.pipeline.retry_pending_contents():
        if p not in on_disk and any(p.startswith(r.rstrip("/") + "/") for r in roots):
            jobs.append((p, None))
    return jobs, on_disk


def status(db: Catalog, settings: Settings, *, failed: bool = False, limit: int = 50) -> dict[str, Any]:
    """Counts and failures from the SQLite books alone (no Milvus needed)."""
    counts = db.counts()
    out: dict[str, Any] = {"counts": counts, "home": str(settings.home), "milvus": settings.milvus_uri}
    out["roots"] = db.roots()
    # Named roots: where this host and each other host sharing the books mount them.
    out["named_roots"] = {name: {"here": settings.root_map.mount_of(name)} for name in settings.root_map.names()}
    for name, host, path in db.root_mounts():
        if host != settings.host_name:
            out["named_roots"].setdefault(name, {"here": None})[host] = path
    # Every daemon sharing these books (one, or several hosts on PostgreSQL), with its rates.
    from pixgrep.service.fleet import describe

    out["daemons"] = describe(db.daemons(), lease_seconds=settings.daemon.lease_seconds)
    if failed:
        out["failures"] = db.failures(limit)
    return out


def retry_failed(index: Index) -> list[str]:
    """Mark failed contents for another try; returns the paths to process again (with force)."""
    paths = index.db.failed_paths()
    index.pipeline.reset_failed()
    return paths


@dataclass
class ReindexReport:
    ocr: int = 0
    caption: int = 0
    embed: int = 0
    failed: int = 0


def reindex(index: Index, *, stale: bool = False, embeddings: bool = False, everything: bool = False) -> ReindexReport:
    """Re-run stages: all of them (``everything``), only what changed (``stale``), or
    only the embeddings into a rebuilt collection (``embeddings``; no OCR)."""
    p = index.pipeline
    report = ReindexReport()
    contents = index.db.contents(ContentStatus.DONE)
    if embeddings:
        p.rebuild_store()
        report.embed = p.refresh([c.hash for c in contents], recaption=False)
        return report
    need_ocr: list[str] = []
    need_caption: list[str] = []
    need_embed: list[str] = []
    for c in contents:
        stages = {"ocr", "caption", "embed"} if everything else p.stale_stages(c)
        if "ocr" in stages:
            need_ocr.append(c.hash)
        elif "caption" in stages:
            need_caption.append(c.hash)
        elif "embed" in stages:
            need_embed.append(c.hash)
    if need_ocr:
        outs = p.process(index.db.paths_of(need_ocr), force=True)
        report.ocr = sum(o.status == OutcomeStatus.INDEXED for o in outs)
        report.failed += sum(o.status in (OutcomeStatus.FAILED, OutcomeStatus.RETRY) for o in outs)
    if need_caption:
        report.caption = p.refresh(need_caption, recaption=True)
    if need_embed:
        report.embed = p.refresh(need_embed, recaption=False)
    p.store.flush()
    return report
