"""``pixgrep daemon``: the foreground service that systemd runs.

Threads: the main thread handles signals and supervises; ``pixgrep-worker``
runs the pipeline; the watcher's observers and its ``pixgrep-gate`` only
enqueue; ``pixgrep-rescan`` reconciles disk and books at start-up and every
``watch.rescan_interval``; ``pixgrep-api-server`` serves the socket. If any of
them dies unexpectedly the process exits with ExitCode.SOFTWARE so that
systemd restarts it; the durable queue makes that safe.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from importlib import metadata
from typing import Any

from pixgrep import scan
from pixgrep.app import Index
from pixgrep.app import status as books_status
from pixgrep.db import Root
from pixgrep.errors import EmbeddingMismatch, StoreUnavailable
from pixgrep.service.api import ApiError, ApiServer
from pixgrep.service.queue import Job, WorkQueue
from pixgrep.service.reconcile import Report, reconcile
from pixgrep.service.watcher import Folder, Watcher
from pixgrep.service.worker import Worker
from pixgrep.settings import ConfigError, ExitCode, Settings, load_settings
from pixgrep.stages import BackendUnavailable

log = logging.getLogger("pixgrep.service")

STATUS_EVERY = 5.0
STORE_RETRY = 3.0
HEAL_EVERY = 30.0
# Settings a running daemon cannot change; a reload only warns about them.
_RESTART_ONLY = ("home", "image", "ocr", "embed", "caption", "pipeline", "milvus")


class _NoNotifier:
    def ready(self) -> None: ...
    def status(self, text: str) -> None: ...
    def watchdog(self) -> None: ...
    def reloading(self) -> None: ...
    def stopping(self) -> None: ...
    def watchdog_interval(self) -> float | None:
        return None


def make_notifier() -> Any:
    try:
        from pixgrep.service.notify import Notifier
    except ImportError:
        return _NoNotifier()
    return Notifier()


def _tiny_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 32), "white").save(buf, "PNG")
    return buf.getvalue()


class Daemon:
    """The running service; also the API's backend."""

    def __init__(
        self,
        settings: Settings,
        *,
        reload_settings: Callable[[], Settings] | None = None,
        ocr_workers: int | None = None,
        notifier: Any = None,
    ) -> None:
        self.settings = settings
        self._reload_settings = reload_settings or (lambda: load_settings(settings.config_file))
        self._ocr_workers = ocr_workers
        self.notifier = notifier or make_notifier()
        self.started_at = time.time()
        self.folders: list[Folder] = [Folder(str(f.path), f.polling) for f in settings.watch.folders]
        self.index: Index | None = None
        self.queue: WorkQueue | None = None
        self.worker: Worker | None = None
        self.watcher: Watcher | None = None
        self.api: ApiServer | None = None
        self.state = "starting"
        self.exit_code = ExitCode.OK
        self.reconciles: dict[str, Report] = {}
        self.errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload = threading.Event()
        self._ready = threading.Event()
        self._rescan_kick = threading.Event()
        self._rescan_now: list[str] = []
        self._rescan_lock = threading.Lock()
        self._rescan_thread: threading.Thread | None = None
        self._rescan_exception: BaseException | None = None
        self._roots_cache: list[str] | None = None

    # Signals ------------------------------------------------------------------
    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def request_reload(self) -> None:
        self._reload.set()
        self._wake.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())

    # Start-up -----------------------------------------------------------------
    def _filter(self) -> scan.FileFilter:
        return scan.FileFilter.from_settings(self.settings)

    def start(self) -> None:
        """Open everything; raises ConfigError, or StoreUnavailable if stopped while waiting for the store."""
        s = self.settings
        # One OCR process with all cores by default: an idle daemon OCRs one dropped
        # image at a time, and freshness is what it is for (bench/RESULTS.md).
        workers = self._ocr_workers if self._ocr_workers is not None else (s.ocr.workers or 1)
        self.index = Index(s, ocr_workers=workers)
        self.queue = WorkQueue(self.index.db, max_attempts=s.pipeline.max_attempts)
        self.queue.recover()
        # The API first: while we hold the Milvus Lite lock, the CLI must find us.
        self.api = ApiServer(self, s.socket_path)
        try:
            self.api.start()
        except ApiError as e:
            raise ConfigError(str(e)) from None
        self._warm_up()
        if self._stop.is_set():
            return
        self.worker = Worker(
            self.index.pipeline,
            self.queue,
            batch_size=s.pipeline.batch_size,
            stable_seconds=s.watch.stable_seconds,
            idle_unload_seconds=s.daemon.idle_unload_seconds,
            roots=self._roots,
            flt=self._filter(),
        )
        self.worker.start()
        self.watcher = Watcher(
            self.queue,
            self._filter(),
            stable_seconds=s.watch.stable_seconds,
            poll_interval=s.watch.poll_interval,
            capacity=s.daemon.queue_size,
        )
        self.watcher.start(self.folders)
        self._remember_roots([f.path for f in self.folders])
        self._rescan_thread = threading.Thread(target=self._rescan_main, name="pixgrep-rescan", daemon=True)
        self._rescan_thread.start()
        self.state = "running"
        self._ready.set()
        self.notifier.ready()
        self._notify_status()
        log.info("daemon ready: pid %d, %d watched folders", os.getpid(), len(self.folders))

    def _warm_up(self) -> None:
        """Load the embedder, open the store and start OCR; wait while another process holds the store."""
        assert self.index is not None
        p = self.index.pipeline
        warned = False
        while not self._stop.is_set():
            try:
                p.embedder.embed(["warm up"])
                p.store  # noqa: B018  (opens Milvus, holding its lock from here on)
                break
            except (EmbeddingMismatch, BackendUnavailable) as e:
                raise ConfigError(str(e)) from None
            except StoreUnavailable as e:
                self.state = "waiting for the vector store"
                if not warned:
                    log.warning("%s; retrying every %.0fs (is `pixgrep index` running?)", e, STORE_RETRY)
                    warned = True
                self.notifier.status(f"waiting for the vector store: {e}")
                self._ping()
                self._stop.wait(STORE_RETRY)
        if self._stop.is_set():
            return
        png = _tiny_png()
        futures = [p.ocr_pool.submit(f"warmup{i}", png) for i in range(max(1, p.ocr_pool.workers))]
        for f in futures:
            try:
                f.result(timeout=120)
            except Exception as e:
                log.warning("OCR warm-up failed: %s", e)

    # Supervision --------------------------------------------------------------
    def _ping(self) -> None:
        now = time.monotonic()
        if now >= self._next_ping:
            self.notifier.watchdog()
            interval = self.notifier.watchdog_interval()
            self._next_ping = now + (interval if interval else 3600.0)

    _next_ping = 0.0

    def _dead_thread(self) -> str | None:
        if self.worker is not None and not self.worker.alive:
            return f"worker thread died: {self.worker.exception!r}"
        if self.api is not None and not self.api.alive:
            return f"API server thread died: {self.api.exception!r}"
        if self._rescan_thread is not None and not self._rescan_thread.is_alive():
            return f"rescan thread died: {self._rescan_exception!r}"
        if self.watcher is not None:
            if not self.watcher.gate.alive:
                return "stability gate thread died"
            dead = self.watcher.dead()
            if dead:
                return f"observer of {dead[0]} died"
        return None

    def run(self) -> int:
        """Start, supervise until SIGTERM or a dead thread, shut down; returns the exit code."""
        try:
            self.start()
        except ConfigError as e:
            log.error("%s", e)
            self._shutdown()
            return int(ExitCode.CONFIG)
        except Exception as e:
            log.critical("start-up failed: %r", e, exc_info=True)
            self._shutdown()
            return int(ExitCode.SOFTWARE)
        last_status = 0.0
        while not self._stop.is_set():
            interval = self.notifier.watchdog_interval()
            self._wake.wait(min(1.0, interval) if interval else 1.0)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._reload.is_set():
                self._reload.clear()
                try:
                    self.reload()
                except Exception as e:
                    log.exception("reload failed")
                    self.errors.append(
                        {"time": time.time(), "path": str(self.settings.config_file), "error": f"reload failed: {e}"}
                    )
                    self.notifier.ready()
            dead = self._dead_thread()
            if dead:
                log.critical("%s; exiting so that the service manager restarts the daemon", dead)
                self.exit_code = ExitCode.SOFTWARE
                break
            self._ping()
            if time.monotonic() - last_status >= STATUS_EVERY:
                last_status = time.monotonic()
                self._notify_status()
        ok = self._shutdown()
        if self.exit_code == ExitCode.OK and not ok:
            log.warning(
                "the current batch did not finish within %.0fs; it will be redone",
                self.settings.daemon.shutdown_timeout,
            )
        return int(self.exit_code)

    def _notify_status(self) -> None:
        try:
            assert self.queue is not None and self.index is not None
            depth = self.queue.depth()
            counts = self.index.db.counts()
            self.notifier.status(
                f"{counts['indexed']} indexed, {depth['pending'] + depth['processing']} queued, {counts['failed']} failed"
            )
        except Exception as e:
            log.debug("status update failed: %s", e)

    def _shutdown(self) -> bool:
        """Stop the watcher, drain the worker, flush and close; False if the batch did not finish in time."""
        self.state = "stopping"
        self.notifier.stopping()
        self._stop.set()
        self._rescan_kick.set()
        ok = True
        if self.watcher is not None:
            self.watcher.stop()
        if self._rescan_thread is not None:
            self._rescan_thread.join(10)
        if self.worker is not None:
            ok = self.worker.stop(self.settings.daemon.shutdown_timeout)
        if self.api is not None:
            self.api.stop()
        if self.index is not None:
            if not ok:
                # The worker still uses the store: leave its claims to crash recovery and skip the close.
                return False
            try:
                if self.queue is not None:
                    self.queue.prune()
                self.index.close()  # flushes Milvus
            except Exception as e:
                log.error("closing the index failed: %s", e)
        log.info("daemon stopped")
        return ok

    # Reload -------------------------------------------------------------------
    def reload(self) -> None:
        self.notifier.reloading()
        try:
            new = self._reload_settings()
        except ConfigError as e:
            log.error("reload failed, keeping the running config: %s", e)
            self.notifier.ready()
            return
        old = self.settings
        for key in _RESTART_ONLY:
            if getattr(old, key) != getattr(new, key):
                log.warning("setting %r changed: restart the daemon to apply it", key)
        if old.socket_path != new.socket_path:
            log.warning("daemon.socket changed: restart the daemon to apply it")
        self.settings = new
        if self.index is not None:
            self.index.settings.search = new.search  # search tuning applies to the next query
        logging.getLogger().setLevel(new.log_level)
        flt = self._filter()
        assert self.watcher is not None and self.worker is not None
        self.watcher.configure(flt=flt, stable_seconds=new.watch.stable_seconds, poll_interval=new.watch.poll_interval)
        self.worker.flt = flt
        self.worker.stable_seconds = new.watch.stable_seconds
        self.worker.idle_unload_seconds = new.daemon.idle_unload_seconds
        self.folders = [Folder(str(f.path), f.polling) for f in new.watch.folders]
        added, removed = self.watcher.sync(self.folders)
        self._remember_roots(added)
        for p in added:
            self.kick_rescan(p)
        log.info("reloaded config: %d folders (%d added, %d removed)", len(self.folders), len(added), len(removed))
        self.notifier.ready()
        self._notify_status()

    # Rescan -------------------------------------------------------------------
    def kick_rescan(self, path: str | None = None) -> None:
        with self._rescan_lock:
            self._rescan_now.append(path or "*")
        self._rescan_kick.set()

    def _rescan_main(self) -> None:
        try:
            self._rescan_loop()
        except BaseException as e:
            self._rescan_exception = e
            log.critical("rescan thread died: %r", e, exc_info=True)
            self._wake.set()

    def _rescan_loop(self) -> None:
        assert self.queue is not None and self.watcher is not None
        last_full = 0.0
        first = True
        while not self._stop.is_set():
            with self._rescan_lock:
                asked = self._rescan_now
                self._rescan_now = []
            interval = self.settings.watch.rescan_interval
            full = first or "*" in asked or (interval and time.monotonic() - last_full >= interval)
            targets = [f.path for f in self.folders] if full else [p for p in asked if p != "*"]
            # Folders that were missing (unmounted) or whose watch broke: watch and reconcile them again.
            healed = self.watcher.heal(self.folders)
            if full:
                last_full = time.monotonic()
                self.queue.prune()
                if not first and self.worker is not None and self.index is not None:
                    # Vectors whose deletion failed while Milvus was away.
                    try:
                        self.worker.call(self.index.pipeline.purge_orphans)
                    except Exception as e:
                        log.warning("purging orphaned vectors failed: %s", e)
            for root in dict.fromkeys([*targets, *healed]):
                if self._stop.is_set():
                    return
                try:
                    self.reconciles[os.path.abspath(root)] = reconcile(self.index.db, self.queue, root, self._filter())  # type: ignore[union-attr]
                except Exception as e:
                    log.exception("reconcile failed", extra={"file": root})
                    self.errors.append({"time": time.time(), "path": root, "error": f"reconcile failed: {e}"})
            first = False
            wait = max(0.5, interval - (time.monotonic() - last_full)) if interval else HEAL_EVERY
            self._rescan_kick.wait(min(wait, HEAL_EVERY))
            self._rescan_kick.clear()

    # Roots --------------------------------------------------------------------
    def _remember_roots(self, paths: list[str]) -> None:
        assert self.index is not None
        if not paths:
            return
        with self.index.db.session() as s:
            for p in paths:
                s.merge(Root(path=os.path.abspath(p)))
        self._roots_cache = None

    def _roots(self) -> list[str]:
        if self._roots_cache is None:
            assert self.index is not None
            from sqlalchemy import select

            with self.index.db.session() as s:
                known = [str(p) for p in s.scalars(select(Root.path))]
            self._roots_cache = sorted({*known, *(os.path.abspath(f.path) for f in self.folders)})
        return self._roots_cache

    # API backend --------------------------------------------------------------
    def _need_ready(self) -> Index:
        if not self._ready.is_set() or self.index is None:
            raise ApiError(503, f"the daemon is {self.state}; try again in a moment")
        return self.index

    def health(self) -> dict[str, Any]:
        return {"ok": True, "pid": os.getpid(), "state": self.state, "version": _version()}

    def search(self, query: str, *, limit: int | None, mode: str | None, in_dir: str | None) -> list[dict[str, Any]]:
        index = self._need_ready()
        return [r.to_json() for r in index.search(query, mode=mode, limit=limit, in_dir=in_dir)]

    def status(self, *, failed: bool) -> dict[str, Any]:
        if self.index is None or self.queue is None:
            raise ApiError(503, f"the daemon is {self.state}")
        info = books_status(self.index.db, self.settings, failed=failed)
        depth = self.queue.depth()
        w = self.worker
        errors = sorted([*(w.errors if w else []), *self.errors], key=lambda e: e["time"])[-10:]
        info["watched"] = [os.path.abspath(f.path) for f in self.folders]
        info["daemon"] = {
            "running": True,
            "pid": os.getpid(),
            "state": self.state,
            "version": _version(),
            "started_at": self.started_at,
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "socket": str(self.settings.socket_path),
            "images_per_second": w.images_per_second() if w else None,
            "indexed_since_start": w.stats.indexed if w else 0,
            "queue": depth,
            "waiting_to_settle": self.watcher.gate.waiting() if self.watcher else 0,
            "working_on": list(w.current) if w else [],
            "watchers": self.watcher.folders() if self.watcher else [],
            "reconcile": {
                p: {
                    "files": r.files,
                    "queued": r.queued,
                    "deleted": r.deleted,
                    "seconds": round(r.seconds, 3),
                    "skipped": r.skipped,
                }
                for p, r in self.reconciles.items()
            },
            "last_errors": [f"{e['path']}: {e['error']}" for e in errors],
        }
        if failed:
            info.setdefault("failures", []).extend(
                {"path": f["path"], "error": f["error"] or "failed", "attempts": f["attempts"]}
                for f in self.queue.failures()
            )
        return info

    def watch(self, path: str, *, polling: bool) -> dict[str, Any]:
        self._need_ready()
        assert self.watcher is not None
        path = os.path.abspath(os.path.expanduser(path))
        if not os.path.isdir(path):
            raise ApiError(400, f"{path} is not a folder")
        self.folders = [f for f in self.folders if os.path.abspath(f.path) != path] + [Folder(path, polling)]
        mode = self.watcher.add(Folder(path, polling))
        self._remember_roots([path])
        self.kick_rescan(path)
        return {"path": path, "mode": mode, "watched": [f.path for f in self.folders]}

    def unwatch(self, path: str, *, forget: bool) -> dict[str, Any]:
        index = self._need_ready()
        assert self.watcher is not None
        path = os.path.abspath(os.path.expanduser(path))
        was = any(os.path.abspath(f.path) == path for f in self.folders)
        self.folders = [f for f in self.folders if os.path.abspath(f.path) != path]
        self.watcher.remove(path)
        removed = 0
        if forget:
            assert self.worker is not None
            removed = self.worker.call(lambda: index.pipeline.remove_tree(path))
            with index.db.session() as s:
                root = s.get(Root, path)
                if root is not None:
                    s.delete(root)
            self._roots_cache = None
        return {"path": path, "was_watched": was, "forgotten": removed, "watched": [f.path for f in self.folders]}

    def index_paths(self, paths: list[str], *, force: bool) -> int:
        self._need_ready()
        assert self.queue is not None and self.index is not None
        n = 0
        flt = self._filter()
        for p in paths:
            p = os.path.abspath(os.path.expanduser(p))
            if os.path.isdir(p):
                self._remember_roots([p])
                r = reconcile(self.index.db, self.queue, p, flt, force=force)
                n += r.queued + r.deleted
            elif os.path.exists(p):
                self.queue.upsert(p, force=force)
                n += 1
            else:
                # Gone from disk: forget it (a file or a whole folder).
                self.queue.delete(p)
                n += 1
        return n

    def reindex(self, *, stale: bool, embeddings: bool, all: bool, failed: bool) -> dict[str, Any]:
        index = self._need_ready()
        assert self.queue is not None and self.worker is not None
        out: dict[str, Any] = {}
        if stale or embeddings or all:
            from pixgrep.app import reindex

            # In the worker thread, between batches: a rebuild swaps the store under it.
            report = self.worker.call(lambda: reindex(index, stale=stale, embeddings=embeddings, everything=all))
            out.update(dataclasses.asdict(report))
        if failed or not (stale or embeddings or all):
            from sqlalchemy import or_, select

            from pixgrep.db import Content, PathEntry

            with index.db.session() as s:
                paths = list(
                    s.scalars(
                        select(PathEntry.path)
                        .outerjoin(Content, Content.hash == PathEntry.content_hash)
                        .where(or_(PathEntry.error.is_not(None), Content.status.in_(("failed", "pending"))))
                    )
                )
            index.pipeline.reset_failed()
            n = self.queue.requeue_failed()
            n += self.queue.put(Job(p, "force") for p in paths)
            out["queued"] = n
        return out


def _version() -> str:
    try:
        return metadata.version("pixgrep")
    except metadata.PackageNotFoundError:
        return "?"


def run_daemon(
    settings: Settings,
    *,
    reload_settings: Callable[[], Settings] | None = None,
    ocr_workers: int | None = None,
) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; returns the process exit code."""
    daemon = Daemon(settings, reload_settings=reload_settings, ocr_workers=ocr_workers)
    daemon.install_signal_handlers()
    log.info("starting pixgrep daemon %s (pid %d, home %s)", _version(), os.getpid(), settings.home)
    return daemon.run()
