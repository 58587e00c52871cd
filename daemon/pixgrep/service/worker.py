"""The worker loop: claim batches from the durable queue and run the pipeline on them."""

from __future__ import annotations

import collections
import concurrent.futures as cf
import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from pixgrep import diskfull, scan
from pixgrep.catalog import OutcomeStatus, QueueOp
from pixgrep.errors import DiskFull, PixgrepError, RetryableError
from pixgrep.pipeline import Outcome, Pipeline
from pixgrep.service import converge
from pixgrep.service.outage import Outage
from pixgrep.service.queue import Item, Job, WorkQueue
from pixgrep.service.threads import StoppableThread

log = logging.getLogger("pixgrep.service.worker")

T = TypeVar("T")


@dataclass
class Stats:
    started: float
    indexed: int = 0
    linked: int = 0
    removed: int = 0
    moved: int = 0
    failed: int = 0
    batches: int = 0
    busy_seconds: float = 0.0


class Worker(StoppableThread):
    """Runs in its own thread; if it dies, the daemon exits non-zero (see the supervisor)."""

    def __init__(
        self,
        pipeline: Pipeline,
        queue: WorkQueue,
        *,
        batch_size: int,
        stable_seconds: float,
        idle_unload_seconds: float = 0.0,
        roots: Callable[[], Sequence[str]] = list,
        flt: scan.FileFilter | None = None,
    ) -> None:
        super().__init__("pixgrep-worker")
        self.pipeline = pipeline
        self.queue = queue
        self.batch_size = batch_size
        self.stable_seconds = stable_seconds
        self.idle_unload_seconds = idle_unload_seconds
        self.roots = roots
        self.flt = flt
        self.stats = Stats(started=time.time())
        self.errors: collections.deque[dict[str, Any]] = collections.deque(maxlen=20)
        self._recent: collections.deque[tuple[float, int, float]] = collections.deque(maxlen=200)
        self._claimed: list[Item] = []
        self._idle_since = time.monotonic()
        self._unloaded = True
        self._dirty = False
        self.current: list[str] = []
        self._calls: collections.deque[tuple[Callable[[], Any], cf.Future[Any]]] = collections.deque()
        self._calls_lock = threading.Lock()
        # A store outage pauses the queue (issue 9, defect 2): nothing is claimed until a probe answers.
        self.outage = Outage(lambda: self.pipeline.store.probe())
        # Claims a full disk kept us from settling: back to pending once there is room.
        self._stranded: list[Item] = []

    # Lifecycle ---------------------------------------------------------------
    def stop(self, timeout: float | None = None) -> bool:
        """Finish the current batch within ``timeout``; False if it did not."""
        with self._calls_lock:
            # Under the lock: a call() either lands before the stop (and is cancelled) or sees it.
            self._stopping.set()
        return super().stop(timeout)

    def on_thread_stop(self) -> None:
        self.queue.wake.set()

    def run(self) -> None:
        while self.should_keep_running():
            self._run_calls()
            if self.outage.down:
                self._wait_for(self.outage)
            elif self.queue.full.down:
                self._wait_for(self.queue.full)
            elif not self._step():
                self._idle()
        self._run_calls(cancel=True)

    def _wait_for(self, outage: Outage) -> None:
        """Paused: sleep until the next probe is due (a stop or a call wakes us), then probe."""
        wait = outage.wait_seconds()
        if wait > 0:
            self.queue.wake.wait(wait)
            self.queue.wake.clear()
        if self.should_keep_running() and outage.probe():
            self._unstrand()
            self.queue.wake.set()  # resume at once

    def _step(self) -> bool:
        """``step``, with a full disk a pause: the queue paused itself, the claims wait for room."""
        try:
            return self.step()
        except DiskFull:
            return True

    def _unstrand(self) -> None:
        stranded, self._stranded = self._stranded, []
        try:
            self.queue.release(stranded)
        except DiskFull:
            self._stranded = stranded

    def call(self, fn: Callable[[], T], timeout: float | None = None) -> T:
        """Run ``fn`` in the worker thread between batches and return its result."""
        fut: cf.Future[Any] = cf.Future()
        with self._calls_lock:
            if self.stopping:
                raise PixgrepError("the daemon is stopping")
            self._calls.append((fn, fut))
        self.queue.wake.set()
        return fut.result(timeout)  # type: ignore[no-any-return]

    def _run_calls(self, cancel: bool = False) -> None:
        while True:
            with self._calls_lock:
                if not self._calls:
                    return
                fn, fut = self._calls.popleft()
            if cancel:
                fut.set_exception(PixgrepError("the daemon is stopping"))
                continue
            try:
                fut.set_result(fn())
            except Exception as e:
                fut.set_exception(e)

    def _idle(self) -> None:
        if self._dirty:
            # Milvus Lite searches far faster over flushed segments.
            try:
                self.pipeline.store.flush()
                self._dirty = False
            except PixgrepError as e:
                log.warning("flush failed: %s", e)
        now = time.monotonic()
        if self.idle_unload_seconds and not self._unloaded and now - self._idle_since >= self.idle_unload_seconds:
            log.info("idle for %.0fs: unloading models", now - self._idle_since)
            self.pipeline.unload_models()
            self._unloaded = True
        nxt = self.queue.next_due()
        poll = self.queue.poll_seconds
        wait = poll if nxt is None else max(0.0, min(poll, nxt - time.time()))
        if self.idle_unload_seconds and not self._unloaded:
            wait = min(wait, max(0.05, self.idle_unload_seconds - (now - self._idle_since)))
        if wait > 0:
            self.queue.wake.wait(wait)
        self.queue.wake.clear()

    def step(self) -> bool:
        """Claim and process one batch; False if nothing was due."""
        items = self.queue.claim(self.batch_size)
        if not items:
            return False
        self._claimed = items
        self._unloaded = False
        t0 = time.monotonic()
        try:
            n = self.process(items)
        except DiskFull:
            self._stranded.extend(items)  # only rows still claimed go back (see Queue.release)
            raise
        finally:
            self._claimed = []
            self.current = []
            self._idle_since = time.monotonic()
        dt = time.monotonic() - t0
        if log.isEnabledFor(logging.DEBUG):
            lag = time.time() - min(it.enqueued_at for it in items)
            log.debug("batch of %d (%d indexed) in %.3fs; queued %.3fs before done", len(items), n, dt, lag)
        self.stats.batches += 1
        self.stats.busy_seconds += dt
        if n:
            self._recent.append((time.time(), n, dt))
        self._dirty = True
        return True

    # Processing --------------------------------------------------------------
    def _root_of(self, path: str) -> str | None:
        best: str | None = None
        for r in self.roots():
            r = r.rstrip("/")
            if path.startswith(r + "/") and (best is None or len(r) > len(best)):
                best = r
        return best

    def _note_error(self, path: str, error: str) -> None:
        self.errors.append({"time": time.time(), "path": path, "error": error})

    def process(self, items: Sequence[Item]) -> int:
        """Process claimed items; returns how many images were newly indexed."""
        moves = [it for it in items if it.op == QueueOp.MOVE]
        upserts = [it for it in items if it.op in (QueueOp.UPSERT, QueueOp.FORCE)]
        deletes = [it for it in items if it.op == QueueOp.DELETE]
        extra: list[Item] = []
        for it in moves:
            self._guarded(it, lambda it=it: self._move(it, extra))  # type: ignore[misc]
            log.debug("move %s -> %s", it.src, it.path)
        n = self._upsert(upserts + extra)
        for it in deletes:
            self._guarded(it, lambda it=it: self._delete(it))  # type: ignore[misc]
            log.debug("delete %s", it.path)
        # Only once the batch is done: a delete queued on a move's own row would be absorbed by the move.
        self._converge([it.path for it in moves])
        return n

    def _converge(self, touched: Sequence[str]) -> None:
        """Names the moves wrote whose file is gone and that no queued event takes on are forgotten a moment
        later (service/converge.py); the delete checks the disk again, and an event still on its way wins."""
        if not touched:
            return
        gone = converge.ghosts(self.pipeline.db, self.queue, touched)
        if gone:
            log.info("%d moved names are gone from disk; forgetting them unless an event takes them on", len(gone))
            when = time.time() + max(2.0, 2 * self.stable_seconds)
            self.queue.put(Job(p, QueueOp.DELETE, not_before=when) for p in gone)

    def _guarded(self, item: Item, fn: Callable[[], bool]) -> None:
        try:
            if fn():
                self.queue.done([item])
        except DiskFull:
            raise
        except RetryableError as e:
            self._note_error(item.path, str(e))
            self.queue.retry(item, str(e))
        except Exception as e:
            if (full := self.queue.disk_full(e)) is not None:
                raise full from e
            log.exception("%s failed", item.op, extra={"file": item.path})
            self._note_error(item.path, f"{type(e).__name__}: {e}")
            self.queue.retry(item, f"{type(e).__name__}: {e}")

    def _move(self, it: Item, extra: list[Item]) -> bool:
        src, dst = self._earlier_name(it.src or ""), it.path
        p = self.pipeline
        if self._moved_on(src, dst):
            return True
        if os.path.isdir(dst):
            n = p.move_tree(src, dst)
            self.stats.moved += n
            # Files the books did not know under the old name: index them now.
            if self.flt is not None:
                self.queue.put(Job(f, QueueOp.UPSERT) for f in scan.walk([dst], self.flt))
            if not os.path.exists(src):
                self.stats.removed += p.remove_tree(src)
            return True
        if p.move(src, dst, self._root_of(dst)):
            self.stats.moved += 1
            return True
        if self.queue.in_flight(src):
            # The old name is still being indexed (here or by another daemon sharing the books): move
            # it once it is recorded, instead of indexing the bytes a second time under the new name.
            self.queue.defer(it, time.time() + 1.0)
            return False
        # Unknown source, changed on the way, or gone since: index what is there, forget what is not.
        if not os.path.lexists(src):
            self.stats.removed += p.remove_paths([src]) + p.remove_tree(src)
        elif os.path.isfile(src):
            self.queue.put([Job(src, QueueOp.UPSERT)])
        if os.path.isfile(dst):
            extra.append(it)
            return False
        if not os.path.lexists(dst):
            self.stats.removed += p.remove_paths([dst]) + p.remove_tree(dst)
        return True

    def _earlier_name(self, src: str) -> str:
        """The name the books know ``src`` by: renames seen out of order (a -> b, b -> c with the second
        first) chain back through the moves still queued."""
        if not src or os.path.lexists(src) or self.pipeline.db.knows(src):
            return src
        earlier = self.queue.live_moves()
        for _ in range(8):
            if src not in earlier or self.pipeline.db.knows(src):
                break
            src = earlier[src]
        return src

    def _moved_on(self, src: str, dst: str) -> bool:
        """Both names gone: the file or folder moved on again (renamed twice in a row). Carry its books
        along to ``dst``, where the next move event finds them; forgetting them here would cost the OCR
        of every file again under the final name. If no queued move takes them on from ``dst`` (both
        names were simply deleted), ``_converge`` forgets them after the batch."""
        if os.path.lexists(dst) or os.path.lexists(src):
            return False
        self.stats.moved += self.pipeline.carry(src, dst, self._root_of(dst))
        return True

    def _delete(self, it: Item) -> bool:
        p = self.pipeline
        if self.queue.in_flight(it.path, moving_from=True):
            # Renamed: the move accounts for the old name (forgetting it now would orphan the bytes
            # and OCR them again under the new one). Another daemon's watcher may see only a delete.
            return True
        if os.path.lexists(it.path):
            # Re-created since the event (an editor's save, a delete-and-copy).
            if os.path.isfile(it.path):
                self.queue.put([Job(it.path, QueueOp.UPSERT)])
            return True
        n = p.remove_paths([it.path])
        if it.path.rstrip("/") in {r.rstrip("/") for r in self.roots()}:
            # A watched folder vanished: deleted, or a drive unmounted. Keep its index until it
            # is back (the rescan reconciles it) or the user says `pixgrep unwatch --forget`.
            log.warning("watched folder is gone; keeping its index until it is back", extra={"file": it.path})
        else:
            n += p.remove_tree(it.path)
        self.stats.removed += n
        return True

    def _unsettled(self, it: Item) -> float | None:
        """When a file changed too recently to be read safely: the time it may be read."""
        if not self.stable_seconds:
            return None
        try:
            st = os.stat(it.path)
        except OSError:
            return None
        changed = max(st.st_mtime, st.st_ctime)
        now = time.time()
        # A clock far in the future (skewed network mount) must not defer forever.
        if changed > now + 5 or now - changed >= self.stable_seconds:
            return None
        return changed + self.stable_seconds

    def _upsert(self, items: Sequence[Item]) -> int:
        """Run the pipeline on upserts that are ready; returns how many images were newly indexed."""
        ready = self._ready(items)
        if not ready:
            return 0
        by_path: dict[str, Item] = {it.path: it for it in ready}
        self.current = list(by_path)
        outcomes: dict[str, Outcome] = {}
        for force in (False, True):
            group = [it for it in ready if (it.op == QueueOp.FORCE) == force]
            for it in self._process(group, outcomes, force=force):
                by_path.pop(it.path, None)
        return self._settle(by_path, outcomes)

    def _ready(self, items: Sequence[Item]) -> list[Item]:
        """The items whose files are stable; the others are deferred without counting an attempt."""
        ready: list[Item] = []
        for it in items:
            until = self._unsettled(it)
            if until is not None:
                self.queue.defer(it, until)
            else:
                ready.append(it)
        return ready

    def _process(self, group: list[Item], outcomes: dict[str, Outcome], *, force: bool) -> list[Item]:
        """Run the pipeline on one group, filling ``outcomes``; returns the items already sent to retry."""
        if not group:
            return []
        try:
            self.pipeline.process(
                [(it.path, self._root_of(it.path)) for it in group],
                progress=lambda o: outcomes.__setitem__(o.path, o),
                force=force,
                should_stop=lambda: self.stopping,
            )
            if self.pipeline.store_error is not None:
                self._store_failed(self.pipeline.store_error)
            return []
        except RetryableError as e:
            # e.g. Milvus went away while linking a duplicate: the whole group waits.
            error = str(e)
        except Exception as e:
            if (full := self.queue.disk_full(e)) is not None:
                raise full from e
            log.exception("batch of %d failed", len(group))
            error = f"{type(e).__name__}: {e}"
        retried = [it for it in group if it.path not in outcomes]
        for it in retried:
            self._note_error(it.path, error)
            self.queue.retry(it, error)
        return retried

    def _store_failed(self, e: Exception) -> None:
        """A store write failed: Milvus Lite on a full disk pauses for room, anything else for the store."""
        if self.queue.disk_full(e) is None:
            self.outage.begin(str(e))

    def _paused(self, error: str | None) -> bool:
        """Whether a passing outcome waits for the store or for room (no attempt counted)."""
        if self.outage.down or self.queue.full.down:
            return True
        if not diskfull.no_room(self.queue.home):
            return False
        # e.g. a write of the batch failed and the pipeline kept it as a retry: the disk is full.
        self.queue.full.begin(f"{DiskFull(str(self.queue.home), errno.ENOSPC)} ({error})")
        return True

    def _settle(self, by_path: dict[str, Item], outcomes: dict[str, Outcome]) -> int:
        """Queue rows follow the outcomes: recorded ones are done (with their reason), passing ones retry,
        and those not reached before a stop or waiting for the store go back to pending uncounted."""
        done: list[Item] = []
        back: list[Item] = []
        notes: dict[int, str] = {}
        n_indexed = 0
        for path, it in by_path.items():
            o = outcomes.get(path)
            if o is not None and o.status == OutcomeStatus.BUSY:
                self.queue.defer(it, time.time() + 1.0)
            elif o is None or (not o.status.recorded and self._paused(o.error)):
                back.append(it)
            elif not o.status.recorded:
                self._note_error(path, o.error or "retry")
                self.queue.retry(it, o.error or "retry")
            else:
                done.append(it)
                n_indexed += self._count(it, o, notes)
        self.queue.release(back)
        self.queue.done(done, note=notes)
        self.stats.indexed += n_indexed
        return n_indexed

    def _count(self, it: Item, o: Outcome, notes: dict[int, str]) -> int:
        """Stats and the queue note of one recorded outcome; 1 if it indexed new bytes."""
        if o.status == OutcomeStatus.FAILED and o.error:
            notes[it.id] = o.error
            if o.error != "file vanished":
                self.stats.failed += 1
                self._note_error(it.path, o.error)
        self.stats.linked += o.status == OutcomeStatus.LINKED
        return int(o.status == OutcomeStatus.INDEXED)

    # Reporting ---------------------------------------------------------------
    def images_per_second(self, window: float = 300.0) -> float | None:
        """Images indexed per second of work over the last few minutes; None if none were."""
        now = time.time()
        recent = [(n, dt) for t, n, dt in self._recent if now - t <= window]
        busy = sum(dt for _, dt in recent)
        if not recent or busy <= 0:
            return None
        return round(sum(n for n, _ in recent) / busy, 3)
