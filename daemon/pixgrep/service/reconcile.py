"""Reconcile: compare a folder on disk with the books by stat and queue the differences.

Runs at start-up and every ``watch.rescan_interval``; it catches whatever the
watcher missed (daemon down, inotify overflow, polling gaps). One bulk SELECT
per folder and one ``os.scandir`` walk: no per-file queries.
"""

from __future__ import annotations

import errno
import fnmatch
import logging
import os
import re
import stat
import time
from dataclasses import dataclass, field

from pixgrep import scan
from pixgrep.catalog import Catalog, QueueOp
from pixgrep.service.queue import Job, WorkQueue

log = logging.getLogger("pixgrep.service.reconcile")


@dataclass
class Report:
    root: str
    files: int = 0
    unchanged: int = 0
    queued: int = 0
    deleted: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    unreadable: list[str] = field(default_factory=list)


class _Matcher:
    """FileFilter.accepts for files under folders already pruned by dir_ok, as one regex per rule kind."""

    def __init__(self, flt: scan.FileFilter) -> None:
        def union(pats: list[str]) -> re.Pattern[str] | None:
            return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in pats)) if pats else None

        self.exts = flt.extensions
        self.name_ex = union([p for p in flt.exclude if "/" not in p])
        self.rel_ex = union([p for p in flt.exclude if "/" in p])
        self.include = union(list(flt.include))

    def accepts(self, name: str, rel: str) -> bool:
        if not name.lower().endswith(self.exts):
            return False
        if self.name_ex is not None and self.name_ex.match(name):
            return False
        if self.rel_ex is not None and self.rel_ex.match(rel):
            return False
        return self.include is None or bool(self.include.match(rel) or self.include.match(name))


def _keep_loop(found: dict[bytes, tuple[int, int, int]], e: OSError, path: str, accepted: bool) -> None:
    """A symlink loop is queued (with a stat no file has) so the pipeline records it, as `pixgrep index` does."""
    if e.errno == errno.ELOOP and accepted:
        found[os.fsencode(path)] = (-1, -1, -1)


def _walk(root: str, flt: scan.FileFilter, report: Report) -> dict[bytes, tuple[int, int, int]]:
    """Accepted files under ``root`` -> (size, mtime_ns, inode); unreadable folders land in the report."""
    found: dict[bytes, tuple[int, int, int]] = {}
    m = _Matcher(flt)
    cut = len(root.rstrip("/")) + 1
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            it = os.scandir(d)
        except OSError as e:
            report.unreadable.append(d)
            log.warning("cannot list folder: %s", e.strerror or e, extra={"file": d})
            continue
        with it:
            for entry in it:
                name = entry.name
                try:
                    if entry.is_dir(follow_symlinks=False):
                        # Symlinked folders are not followed: they could loop or leave the root.
                        if flt.dir_ok(name):
                            stack.append(entry.path)
                        continue
                    path = entry.path
                    if not m.accepts(name, path[cut:]):
                        continue
                    st = entry.stat()  # follows a symlinked file, like the pipeline does
                except OSError as e:
                    _keep_loop(found, e, entry.path, m.accepts(name, entry.path[cut:]))
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                found[os.fsencode(path)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return found


def reconcile(db: Catalog, queue: WorkQueue, root: str, flt: scan.FileFilter, *, force: bool = False) -> Report:
    """Queue new and changed files under ``root`` and deletions for files gone from it."""
    t0 = time.monotonic()
    root = os.path.abspath(root)
    report = Report(root)
    if not os.path.isdir(root):
        # An unmounted drive looks like an empty folder: never forget its files for that.
        report.skipped = "not a folder (missing or unmounted?)"
        log.warning("skipping reconcile: %s", report.skipped, extra={"file": root})
        return report
    disk = _walk(root, flt, report)
    known = db.known_under(root)
    jobs: list[Job] = []
    op = QueueOp.FORCE if force else QueueOp.UPSERT
    for p, st in disk.items():
        k = known.get(p)
        if not force and k is not None and k[3] and k[:3] == st:
            report.unchanged += 1
            continue
        jobs.append(Job(os.fsdecode(p), op, revive=force))
    report.files = len(disk)
    report.queued = len(jobs)
    bad = tuple(os.fsencode(d.rstrip("/")) + b"/" for d in report.unreadable)
    for p in known:
        if p not in disk and not (bad and p.startswith(bad)):
            jobs.append(Job(os.fsdecode(p), QueueOp.DELETE))
            report.deleted += 1
    queue.put(jobs)
    report.seconds = time.monotonic() - t0
    if jobs:
        log.info(
            "reconciled %d files in %.2fs: %d new or changed, %d gone",
            report.files,
            report.seconds,
            report.queued,
            report.deleted,
            extra={"file": root},
        )
    return report
