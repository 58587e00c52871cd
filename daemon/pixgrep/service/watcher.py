"""Watching folders: watchdog observers whose events only enqueue.

Created and modified files go through a stability gate (size, mtime and ctime
unchanged for ``watch.stable_seconds``) before they are queued, so a file still
being copied or written is never read. Deletes and moves are queued at once
(deletes with a short delay, so that a delete followed by a create of the same
bytes elsewhere links instead of re-running OCR).
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from pixgrep import scan
from pixgrep.catalog import QueueOp
from pixgrep.service.queue import Job, WorkQueue
from pixgrep.service.threads import StoppableThread

log = logging.getLogger("pixgrep.service.watcher")

EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    # chmod/chown: a file that was unreadable may be readable now (a change of mode is a change).
    FileAttribEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


@dataclass(frozen=True)
class Folder:
    path: str
    polling: bool = False


def _sig(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


class StabilityGate(StoppableThread):
    """Holds candidate files until they stop changing, then queues them.

    At most ``capacity`` files wait in memory; beyond that they go to the durable
    queue with a delay and the worker re-checks their age before reading them.
    """

    def __init__(self, queue: WorkQueue, *, stable_seconds: float, capacity: int = 256) -> None:
        super().__init__("pixgrep-gate")
        self.queue = queue
        self.stable_seconds = stable_seconds
        self.capacity = capacity
        self._lock = threading.Lock()
        # path -> (signature, time of last change)
        self._waiting: dict[str, tuple[tuple[int, int, int, int] | None, float]] = {}
        self._kick = threading.Event()
        self.passed = 0

    def on_thread_stop(self) -> None:
        self._kick.set()

    def touch(self, path: str) -> None:
        now = time.monotonic()
        with self._lock:
            if path not in self._waiting and len(self._waiting) >= self.capacity:
                overflow = True
            else:
                overflow = False
                self._waiting[path] = (_sig(path), now)
        if overflow:
            self.queue.put([Job(path, QueueOp.UPSERT, not_before=time.time() + self.stable_seconds)])
        self._kick.set()

    def cancel(self, path: str) -> bool:
        with self._lock:
            return self._waiting.pop(path, None) is not None

    def cancel_tree(self, directory: str) -> None:
        prefix = directory.rstrip("/") + "/"
        with self._lock:
            for p in [p for p in self._waiting if p.startswith(prefix)]:
                del self._waiting[p]

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _tick_interval(self) -> float:
        return min(0.05, max(0.02, self.stable_seconds / 8))

    def run(self) -> None:
        while self.should_keep_running():
            with self._lock:
                empty = not self._waiting
            if empty:
                self._kick.wait(1.0)
                self._kick.clear()
                continue
            if self.sleep(self._tick_interval()):
                return
            self.check()

    def check(self) -> int:
        """Queue what has held still long enough; returns how many passed."""
        now = time.monotonic()
        with self._lock:
            items = list(self._waiting.items())
        ready: list[str] = []
        gone: list[str] = []
        for path, (sig, changed_at) in items:
            cur = _sig(path)
            if cur is None:
                gone.append(path)
            elif cur != sig:
                with self._lock:
                    if path in self._waiting:
                        self._waiting[path] = (cur, now)
            elif now - changed_at >= self.stable_seconds:
                ready.append(path)
        with self._lock:
            for p in gone:
                self._waiting.pop(p, None)
            # A file touched again after the stat above stays for another round.
            ready = [p for p in ready if p in self._waiting and self._waiting[p][1] <= now]
            for p in ready:
                del self._waiting[p]
        if ready:
            self.queue.put([Job(p, QueueOp.UPSERT) for p in ready])
            self.passed += len(ready)
        return len(ready)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, root: str) -> None:
        self.w = watcher
        self.root = root

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self.w.handle(self.root, event)
        except Exception:
            # An event must never kill the observer; the rescan catches what is missed.
            log.exception("cannot handle %s", event.event_type, extra={"file": os.fsdecode(event.src_path)})


class Watcher:
    """One observer per folder; inotify unless the folder asks for polling or inotify runs out."""

    def __init__(
        self,
        queue: WorkQueue,
        flt: scan.FileFilter,
        *,
        stable_seconds: float,
        poll_interval: float = 2.0,
        capacity: int = 256,
        observer_factory: Callable[[bool, float], BaseObserver] | None = None,
    ) -> None:
        self.queue = queue
        self.flt = flt
        self.poll_interval = poll_interval
        self.gate = StabilityGate(queue, stable_seconds=stable_seconds, capacity=capacity)
        self._factory = observer_factory or _make_observer
        self._observers: dict[str, tuple[BaseObserver, str]] = {}  # path -> (observer, mode)
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}
        self._serial = 0

    # Lifecycle ---------------------------------------------------------------
    def start(self, folders: Sequence[Folder] = ()) -> None:
        self.gate.start()
        for f in folders:
            self.add(f)

    def stop(self) -> None:
        with self._lock:
            observers = list(self._observers.values())
            self._observers.clear()
        for obs, _ in observers:
            obs.stop()
        for obs, _ in observers:
            obs.join()
        self.gate.stop()

    def configure(self, *, flt: scan.FileFilter, stable_seconds: float, poll_interval: float) -> None:
        self.flt = flt
        self.gate.stable_seconds = stable_seconds
        self.poll_interval = poll_interval

    def sync(self, folders: Sequence[Folder]) -> tuple[list[str], list[str]]:
        """Make the watched set equal ``folders``; returns (added, removed)."""
        want = {os.path.abspath(f.path): f for f in folders}
        with self._lock:
            have = dict(self._observers)
        removed = [p for p in have if p not in want]
        for p in removed:
            self.remove(p)
        added = []
        for p, f in want.items():
            mode = have.get(p, (None, ""))[1]
            wanted_mode = "polling" if f.polling else "inotify"
            if p in have and (mode == wanted_mode or (mode == "polling-fallback" and not f.polling)):
                continue
            if p in have:
                self.remove(p)
            self.add(f)
            added.append(p)
        return added, removed

    # Folders -----------------------------------------------------------------
    def add(self, folder: Folder) -> str:
        """Start watching; returns the mode: inotify, polling, polling-fallback or error."""
        path = os.path.abspath(folder.path)
        self.remove(path)
        if not os.path.isdir(path):
            self.errors[path] = "not a folder (missing or unmounted?)"
            log.warning("cannot watch: not a folder (will retry at the next rescan)", extra={"file": path})
            return "error"
        mode = "polling" if folder.polling else "inotify"
        try:
            obs = self._start_observer(path, polling=folder.polling)
        except OSError as e:
            if folder.polling or e.errno not in (errno.ENOSPC, errno.EMFILE, errno.ENOMEM):
                self.errors[path] = str(e)
                log.error("cannot watch: %s", e, extra={"file": path})
                return "error"
            log.warning(
                "inotify limit reached (%s); polling this folder every %.0fs instead. "
                "Raise fs.inotify.max_user_watches to use inotify.",
                e.strerror or e,
                self.poll_interval,
                extra={"file": path},
            )
            mode = "polling-fallback"
            obs = self._start_observer(path, polling=True)
        self.errors.pop(path, None)
        with self._lock:
            self._observers[path] = (obs, mode)
        log.info("watching (%s)", mode, extra={"file": path})
        return mode

    def _start_observer(self, path: str, *, polling: bool) -> BaseObserver:
        obs = self._factory(polling, self.poll_interval)
        self._serial += 1
        obs.name = f"pixgrep-observer-{self._serial}"
        try:
            obs.schedule(_Handler(self, path), path, recursive=True, event_filter=EVENTS)
            obs.start()
        except BaseException:
            try:
                obs.stop()
                if obs.is_alive():
                    obs.join()
            except Exception:
                pass
            raise
        for i, em in enumerate(obs.emitters):
            em.name = f"pixgrep-emitter-{self._serial}.{i}"
        return obs

    def remove(self, path: str) -> bool:
        path = os.path.abspath(path)
        with self._lock:
            entry = self._observers.pop(path, None)
        self.errors.pop(path, None)
        if entry is None:
            return False
        entry[0].stop()
        entry[0].join()
        self.gate.cancel_tree(path)
        log.info("stopped watching", extra={"file": path})
        return True

    @staticmethod
    def _healthy(path: str, obs: BaseObserver) -> bool:
        # An emitter stops for good when its folder is deleted or replaced.
        return obs.is_alive() and all(em.is_alive() for em in obs.emitters) and os.path.isdir(path)

    def heal(self, folders: Sequence[Folder]) -> list[str]:
        """Re-watch folders whose watch broke or that were missing; returns those now watched again."""
        with self._lock:
            state = {p: self._healthy(p, o) for p, (o, _) in self._observers.items()}
        healed = []
        for f in folders:
            p = os.path.abspath(f.path)
            if state.get(p, False):
                continue
            if p not in state and p not in self.errors:
                continue  # not ours (anymore)
            if os.path.isdir(p) and self.add(f) != "error":
                healed.append(p)
            elif p in state:
                self.remove(p)
                self.errors[p] = "not a folder (missing or unmounted?)"
        return healed

    def folders(self) -> list[dict[str, Any]]:
        with self._lock:
            out = [{"path": p, "mode": m, "alive": self._healthy(p, o)} for p, (o, m) in self._observers.items()]
        out += [{"path": p, "mode": "error", "alive": False, "error": e} for p, e in self.errors.items()]
        return sorted(out, key=lambda d: d["path"])

    def dead(self) -> list[str]:
        with self._lock:
            return [p for p, (o, _) in self._observers.items() if not o.is_alive()]

    # Events ------------------------------------------------------------------
    def _root_for(self, root: str, path: str) -> str:
        # Nested watched folders: filter by the innermost one.
        with self._lock:
            best = root
            for p in self._observers:
                if len(p) > len(best) and path.startswith(p.rstrip("/") + "/"):
                    best = p
        return best

    def _accepts(self, root: str, path: str) -> bool:
        return path.startswith(root.rstrip("/") + "/") and self.flt.accepts(path, root)

    def _dir_ok(self, root: str, path: str) -> bool:
        if not path.startswith(root.rstrip("/") + "/"):
            return False
        rel = os.path.relpath(path, root)
        return all(self.flt.dir_ok(part) for part in rel.split(os.sep))

    def handle(self, root: str, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dst = os.fsdecode(event.dest_path) if event.dest_path else ""
        kind = event.event_type
        if event.is_directory:
            self._handle_dir(root, kind, src, dst)
            return
        if kind in ("created", "modified", "closed", "attrib"):
            if self._accepts(self._root_for(root, src), src):
                self.gate.touch(src)
        elif kind == "deleted":
            self.gate.cancel(src)
            if src.lower().endswith(self.flt.extensions):
                self._delete_later(src)
        elif kind == "moved":
            was_waiting = self.gate.cancel(src)
            src_ok = self._accepts(self._root_for(root, src), src)
            dst_ok = self._accepts(self._root_for(root, dst), dst)
            if dst_ok and (was_waiting or not src_ok):
                # A temp file renamed into place, or a file still settling: gate the new name.
                self.gate.touch(dst)
                if src_ok:
                    self._delete_later(src)
            elif dst_ok:
                self.queue.put([Job(dst, QueueOp.MOVE, src)])
            elif src_ok:
                self._delete_later(src)

    def _handle_dir(self, root: str, kind: str, src: str, dst: str) -> None:
        if kind == "created":
            # watchdog also reports the files inside a folder that appears, but not
            # always before they are complete; the gate covers both.
            return
        if kind == "deleted":
            self.gate.cancel_tree(src)
            self._delete_later(src)
        elif kind == "moved":
            self.gate.cancel_tree(src)
            if self._dir_ok(self._root_for(root, dst), dst):
                self.queue.put([Job(dst, QueueOp.MOVE, src)])
            else:
                self._delete_later(src)

    def _delete_later(self, path: str) -> None:
        self.queue.put([Job(path, QueueOp.DELETE, not_before=time.time() + self.gate.stable_seconds + 0.5)])


def _make_observer(polling: bool, poll_interval: float) -> BaseObserver:
    if polling:
        return PollingObserver(timeout=poll_interval)
    return Observer()
