"""``pixgrep daemon``: the foreground service that systemd runs.

The supervisor owns the process: signals, sd_notify, config reload, and the
set of threads, each a ``StoppableThread``: ``pixgrep-worker`` runs the
pipeline; the watcher's observers and its ``pixgrep-gate`` only enqueue;
``pixgrep-rescan`` reconciles disk and books at start-up and every
``watch.rescan_interval``; ``pixgrep-api-server`` serves the socket with a
``DaemonBackend``; ``pixgrep-gallery-server`` serves the web gallery and
``pixgrep-heartbeat`` records this host for ``pixgrep status``. If any of them
dies unexpectedly the process exits with ExitCode.SOFTWARE so that systemd
restarts it; the durable queue makes that safe.

Shutdown runs in one order: SIGTERM sets a flag; the API answers 503 from then
on; the watcher stops (nothing new is queued), the rescan loop stops, the worker
finishes its batch within ``daemon.shutdown_timeout``, the heartbeat records the
stop, the queue is pruned and the store flushed and closed, and the servers go
last so that the CLI sees a stopping daemon, not a missing one, until it is gone.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from pixgrep import diskfull, scan
from pixgrep.app import Index
from pixgrep.catalog import Catalog
from pixgrep.errors import AlreadyRunning, EmbeddingMismatch, StoreUnavailable
from pixgrep.roots import RootMap
from pixgrep.service.api import ApiError, ApiServer, socket_taken
from pixgrep.service.backend import DaemonBackend, version
from pixgrep.service.fleet import Heartbeat
from pixgrep.service.folders import WatchList
from pixgrep.service.gallery import GalleryServer, gallery_backend
from pixgrep.service.instance import InstanceLock, running_pid
from pixgrep.service.queue import WorkQueue
from pixgrep.service.rescan import Rescanner
from pixgrep.service.room import wait_for_room
from pixgrep.service.threads import StoppableThread
from pixgrep.service.watcher import Folder, Watcher
from pixgrep.service.worker import Worker
from pixgrep.settings import ConfigError, ExitCode, Settings, load_settings
from pixgrep.stages import BackendUnavailable

log = logging.getLogger("pixgrep.service")

STATUS_EVERY = 5.0
STORE_RETRY = 3.0
# Settings a running daemon cannot change; a reload only warns about them.
_RESTART_ONLY = ("home", "image", "ocr", "embed", "caption", "pipeline", "milvus", "db")


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


def _folders(settings: Settings) -> list[Folder]:
    return [Folder(str(f.path), f.polling) for f in settings.watch.folders]


def book_mounts(db: Catalog, host: str, mounts: RootMap) -> None:
    """Book where this host mounts its named roots (``pixgrep status``), and warn about a name dropped from
    ``[roots]``: its files stay booked by name (another host may share them), shown here as ``name:/…``."""
    dropped = sorted({n for n, h, _ in db.root_mounts() if h == host} - set(mounts.names()))
    if dropped:
        log.warning(
            "named roots %s are no longer in [roots]: their files stay booked by name and show as name:/... "
            "on this host; name them again (any mount point) to see them here",
            ", ".join(dropped),
        )
    db.record_mounts(host, mounts)


class Supervisor:
    """The running service: starts the threads, watches them, reloads, and shuts down in order."""

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
        self.index: Index | None = None
        self.queue: WorkQueue | None = None
        self.watchlist: WatchList | None = None
        self.worker: Worker | None = None
        self.watcher: Watcher | None = None
        self.rescanner: Rescanner | None = None
        self.heartbeat: Heartbeat | None = None
        self.api: ApiServer | None = None
        self.gallery: GalleryServer | None = None
        self.backend = DaemonBackend(self)
        self.state = "starting"
        self.exit_code = ExitCode.OK
        # Errors of the supervisor and the rescan loop, for `pixgrep status`.
        self.errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self.ready = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._reload = threading.Event()
        self._next_ping = 0.0

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
    def file_filter(self) -> scan.FileFilter:
        return scan.FileFilter.from_settings(self.settings)

    def threads(self) -> list[StoppableThread]:
        """The supervised threads that run now, in start order."""
        gate = self.watcher.gate if self.watcher is not None else None
        threads = (self.api, self.gallery, self.heartbeat, self.worker, gate, self.rescanner)
        return [t for t in threads if t is not None]

    def _supervise(self, t: StoppableThread) -> None:
        # A dying thread wakes the main loop at once instead of at its next tick.
        t.on_death = lambda _e: self._wake.set()
        t.start()

    def start(self) -> None:
        """Open everything; raises ConfigError, or StoreUnavailable if stopped while waiting for the store."""
        s = self.settings
        # One OCR process with all cores by default: an idle daemon OCRs one dropped
        # image at a time, and freshness is what it is for (bench/RESULTS.md).
        workers = self._ocr_workers if self._ocr_workers is not None else (s.ocr.workers or 1)
        self.index = Index(s, ocr_workers=workers)
        self.queue = WorkQueue(
            self.index.db,
            max_attempts=s.pipeline.max_attempts,
            host=s.daemon.host_name,
            lease_seconds=s.daemon.lease_seconds,
        )
        self.queue.recover()
        book_mounts(self.index.db, s.host_name, s.root_map)
        # Bytes this daemon OCRs are leased to it, so another daemon sharing the books waits for them.
        self.index.pipeline.lease = (self.queue.owner, s.daemon.lease_seconds)
        self.heartbeat = Heartbeat(
            self.index.db,
            self.queue,
            version=version(),
            interval=s.daemon.heartbeat_seconds,
            stats=self._fleet_stats,
            on_reclaim=self.queue.wake.set,
        )
        self._supervise(self.heartbeat)
        self.watchlist = WatchList(self.index.db, _folders(s))
        # The API first: while we hold the Milvus Lite lock, the CLI must find us.
        self.api = ApiServer(self.backend, s.socket_path)
        try:
            self._supervise(self.api)
        except ApiError as e:
            raise ConfigError(str(e)) from None
        if s.ui.enabled:
            self.gallery = GalleryServer(s, gallery_backend(self.backend))
            self._supervise(self.gallery)
        self._warm_up()
        if self._stop.is_set():
            return
        self._start_threads()
        self.state = "running"
        self.ready.set()
        self.notifier.ready()
        self._notify_status()
        log.info("daemon ready: pid %d, %d watched folders", os.getpid(), len(self.watchlist.folders()))

    def _start_threads(self) -> None:
        s = self.settings
        index, queue, watchlist = self.index, self.queue, self.watchlist
        assert index is not None and queue is not None and watchlist is not None
        self.worker = Worker(
            index.pipeline,
            queue,
            batch_size=s.pipeline.batch_size,
            stable_seconds=s.watch.stable_seconds,
            idle_unload_seconds=s.daemon.idle_unload_seconds,
            roots=watchlist.roots,
            flt=self.file_filter(),
        )
        self._supervise(self.worker)
        self.watcher = Watcher(
            queue,
            self.file_filter(),
            stable_seconds=s.watch.stable_seconds,
            poll_interval=s.watch.poll_interval,
            capacity=s.daemon.queue_size,
        )
        self.watcher.gate.on_death = lambda _e: self._wake.set()
        self.watcher.start(watchlist.folders())
        watchlist.remember(watchlist.paths())
        worker = self.worker
        self.rescanner = Rescanner(
            index.db,
            queue,
            self.watcher,
            watchlist,
            flt=self.file_filter,
            interval=lambda: self.settings.watch.rescan_interval,
            purge=lambda: worker.call(index.pipeline.purge_orphans),
            errors=self.errors,
        )
        self._supervise(self.rescanner)

    def _warm_up(self) -> None:
        """Load the embedder, open the store and start OCR; wait while another process holds the store."""
        assert self.index is not None
        p = self.index.pipeline
        warned = False
        while not self._stop.is_set():
            try:
                p.warm_embedders()
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
        futures = [p.ocr_pool.submit(f"warmup{i}", png, warm_up=True) for i in range(max(1, p.ocr_pool.workers))]
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

    def dead_thread(self) -> str | None:
        """Why the daemon must exit, if one of its threads died."""
        for t in self.threads():
            if t.died:
                return f"{t.name} thread died: {t.exception!r}"
        if self.watcher is not None:
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
            self.shutdown()
            return int(ExitCode.CONFIG)
        except AlreadyRunning as e:
            log.error("%s", e)
            self.shutdown()
            return int(ExitCode.TEMPFAIL)
        except Exception as e:
            full = diskfull.classify(e, self.settings.home)
            if full is None:
                log.critical("start-up failed: %r", e, exc_info=True)
            else:  # the disk filled up again after wait_for_room: one line, and EX_IOERR
                log.error("%s; cannot start", full)
            self.shutdown()
            return int(ExitCode.SOFTWARE if full is None else ExitCode.IOERR)
        self._loop()
        ok = self.shutdown()
        if self.exit_code == ExitCode.OK and not ok:
            log.warning(
                "the current batch did not finish within %.0fs; it will be redone",
                self.settings.daemon.shutdown_timeout,
            )
        return int(self.exit_code)

    def _loop(self) -> None:
        last_status = 0.0
        while not self._stop.is_set():
            interval = self.notifier.watchdog_interval()
            self._wake.wait(min(1.0, interval) if interval else 1.0)
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._reload.is_set():
                self._reload.clear()
                self._try_reload()
            dead = self.dead_thread()
            if dead:
                log.critical("%s; exiting so that the service manager restarts the daemon", dead)
                self.exit_code = ExitCode.SOFTWARE
                break
            self._ping()
            if time.monotonic() - last_status >= STATUS_EVERY:
                last_status = time.monotonic()
                self._notify_status()

    def _fleet_stats(self) -> dict[str, Any]:
        """What the heartbeat records for `pixgrep status` on every host."""
        w = self.worker
        if w is None:
            return {}
        return {"images_per_second": w.images_per_second(), "indexed_since_start": w.stats.indexed,
                "working_on": len(w.current)}  # fmt: skip

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

    def shutdown(self) -> bool:
        """Stop the watcher, drain the worker, flush and close, stop the API; False if the batch did not finish in time."""
        self.state = "stopping"
        self.ready.clear()  # the API answers 503 "the daemon is stopping" from here on
        self.notifier.stopping()
        self._stop.set()
        if self.watcher is not None:
            self.watcher.stop()
        if self.rescanner is not None:
            self.rescanner.stop(10)
        ok = True
        if self.worker is not None:
            ok = self.worker.stop(self.settings.daemon.shutdown_timeout)
        if self.heartbeat is not None:
            # After the worker: its leases stay fresh while it drains; then the row says stopped.
            self.heartbeat.stop()
        if ok:
            self._close_index()
        # The API last: until here the CLI finds a daemon (and gets 503s), not a half-closed index.
        if self.gallery is not None:
            self.gallery.stop()
        if self.api is not None:
            self.api.stop()
        if ok:
            log.info("daemon stopped")
        return ok

    def _close_index(self) -> None:
        # Skipped when the worker still runs a batch: its claims are left to crash recovery.
        if self.index is None:
            return
        try:
            if self.queue is not None:
                self.queue.prune()
            self.index.close()  # flushes Milvus
        except Exception as e:
            log.error("closing the index failed: %s", e)

    # Reload -------------------------------------------------------------------
    def _try_reload(self) -> None:
        try:
            self.reload()
        except Exception as e:
            log.exception("reload failed")
            self.errors.append(
                {"time": time.time(), "path": str(self.settings.config_file), "error": f"reload failed: {e}"}
            )
            self.notifier.ready()

    def apply_roots(self, new: Settings, *, wait: bool = True) -> None:
        """Named roots given or changed in the config (a reload, ``pixgrep watch --name``): the books map
        with them from now on. In the worker thread, between batches, so no batch sees two mappings;
        ``wait=False`` (the main loop, which must keep pinging the watchdog) leaves it queued there."""
        if self.index is None or new.root_map == self.index.db.mounts:
            return
        db, host = self.index.db, new.host_name

        def use() -> None:
            n = db.use_mounts(new.root_map)
            book_mounts(db, host, new.root_map)
            log.info("named roots now %s (%d paths booked under their root's name)", new.roots or "none", n)

        if self.worker is not None and self.worker.alive:
            try:
                self.worker.call(use, timeout=None if wait else 0)
            except TimeoutError:
                pass  # queued: the worker applies it after its batch (``use`` logs it)
        else:
            use()
        self.settings.roots = new.roots
        self.index.settings.roots = new.roots

    def refresh_roots(self) -> None:
        """Read the config's ``[roots]`` again (``pixgrep watch --name`` just wrote one)."""
        try:
            self.apply_roots(self._reload_settings())
        except ConfigError as e:
            log.error("cannot read the named roots, keeping the running ones: %s", e)

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
        self.apply_roots(new, wait=False)
        self.settings = new
        if self.index is not None:
            self.index.settings.search = new.search  # search tuning applies to the next query
        logging.getLogger().setLevel(new.log_level)
        flt = self.file_filter()
        assert self.watcher is not None and self.worker is not None
        assert self.watchlist is not None and self.rescanner is not None
        self.watcher.configure(flt=flt, stable_seconds=new.watch.stable_seconds, poll_interval=new.watch.poll_interval)
        self.worker.flt = flt
        self.worker.stable_seconds = new.watch.stable_seconds
        self.worker.idle_unload_seconds = new.daemon.idle_unload_seconds
        self.watchlist.replace(_folders(new))
        added, removed = self.watcher.sync(self.watchlist.folders())
        self.watchlist.remember(added)
        for p in added:
            self.rescanner.kick(p)
        log.info(
            "reloaded config: %d folders (%d added, %d removed)",
            len(self.watchlist.folders()),
            len(added),
            len(removed),
        )
        self.notifier.ready()
        self._notify_status()


def run_daemon(
    settings: Settings,
    *,
    reload_settings: Callable[[], Settings] | None = None,
    ocr_workers: int | None = None,
) -> int:
    """Run the daemon in the foreground until SIGTERM/SIGINT; returns the process exit code."""
    # Before anything else: a second daemon on this index must not touch the first one's socket or locks.
    lock = InstanceLock(settings.home)
    if running_pid(settings.home) is None:  # a second daemon still says at once that one runs (exit 75)
        wait_for_room(settings.home)  # a full disk: wait (one log line) rather than fail and restart in a loop
    try:
        lock.acquire()
        socket_taken(settings.socket_path)  # another index's daemon on our socket: one line too
    except AlreadyRunning as e:
        lock.release()
        log.error("%s", e)
        return int(ExitCode.TEMPFAIL)
    try:
        sup = Supervisor(settings, reload_settings=reload_settings, ocr_workers=ocr_workers)
        sup.install_signal_handlers()
        log.info("starting pixgrep daemon %s (pid %d, home %s)", version(), os.getpid(), settings.home)
        code = sup.run()
    finally:
        lock.release()
    if sup.worker is not None and not sup.worker.join(0):
        # The worker is still inside a batch after daemon.shutdown_timeout. Leave now: a normal exit
        # would stop Milvus Lite's server threads under it (its writes then fail as "Milvus upsert
        # failed" and are redone). Its claims go back to pending at the next start, as after a crash.
        logging.shutdown()
        os._exit(code)
    return code
