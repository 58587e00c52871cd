"""``pixgrep doctor [--repair]``: do the books, Milvus and the local dense index agree?

Checks, in order:

* **permissions**: the state folder and everything in it closed to group and others;
* **books**: paths whose file is gone from disk (stale), paths that point at a
  content the books don't have (dangling), contents no path points at;
* **Milvus against the books**: each indexed content has exactly the rows its
  stored OCR lines and captions make (missing rows, extra or duplicated rows),
  and no rows belong to a content that isn't indexed (orphans);
* **the local dense index** (with Milvus Lite): as many rows as Milvus.

``--repair`` fixes what it can without OCR: closes permissions, forgets stale
and dangling paths, purges pathless contents, re-embeds contents with wrong
rows from their stored text, deletes orphan rows and rebuilds the local index
from Milvus; then it checks again and reports what is left.

Without ``--repair`` nothing under the state folder changes: opening the index
migrates the books, closes the state's permissions, checkpoints SQLite and
rebuilds a stale local index, so a check opens a private copy of the state in
``$TMPDIR`` (as much room as the state takes, for the length of the check) and
reports what ``--repair`` would fix. A Milvus server is opened as it is.

Exit status of the command: 0 when nothing is wrong (after ``--repair``: when
nothing is left), 1 when problems were found (are left).

The fault-injection suite uses :func:`inconsistencies` as its consistency oracle.
It opens the index itself, so no daemon may hold it (:func:`diagnose` raises
``AlreadyRunning`` when one does).
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixgrep.errors import AlreadyRunning
from pixgrep.private import close_entries, loose_entries
from pixgrep.roots import is_key
from pixgrep.settings import is_lite_uri

if TYPE_CHECKING:
    from pixgrep.app import Index
    from pixgrep.settings import Settings


@dataclass(frozen=True)
class Problem:
    kind: str  # permissions | stale path | dangling path | pathless content | missing rows | extra rows | ...
    subject: str  # the path or content hash it is about
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


@dataclass
class Report:
    found: list[Problem] = field(default_factory=list)
    # After --repair: what a second check still finds (None when no repair was asked).
    remaining: list[Problem] | None = None
    repaired: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not (self.found if self.remaining is None else self.remaining)

    def to_json(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "found": [str(p) for p in self.found],
            "remaining": None if self.remaining is None else [str(p) for p in self.remaining],
            "repaired": self.repaired,
            "counts": self.counts,
        }


@dataclass
class _Books:
    paths: dict[str, str | None]
    done: dict[str, int]  # indexed content -> rows it should have in Milvus
    other: set[str]  # contents pending or failed: no rows expected


def _books(index: Index) -> _Books:
    from pixgrep.catalog import ContentStatus
    from pixgrep.segments import build_segments
    from pixgrep.stages import OcrLine

    paths = index.db.paths()
    contents = {c.hash: (c.status, c.lines, c.captions) for c in index.db.contents()}
    done: dict[str, int] = {}
    other: set[str] = set()
    for h, (status, lines, captions) in contents.items():
        if status == ContentStatus.DONE:
            done[h] = len(build_segments([OcrLine.from_json(d) for d in lines], captions))
        else:
            other.add(h)
    return _Books(paths, done, other)


def _check_books(b: _Books) -> list[Problem]:
    out = []
    known = b.done.keys() | b.other
    for p, h in sorted(b.paths.items()):
        if h is not None and h not in known:
            out.append(Problem("dangling path", p, f"{p} points at unknown content {h}"))
        elif not is_key(p) and not os.path.lexists(p):  # a named root not mounted here: another host's to check
            out.append(Problem("stale path", p, f"{p} is gone from disk"))
    referenced = {h for h in b.paths.values() if h}
    out += [Problem("pathless content", h, f"content {h} has no path") for h in sorted(b.done.keys() - referenced)]
    return out


def _check_store(index: Index, b: _Books) -> tuple[list[Problem], dict[str, int]]:
    from pixgrep.store import MilvusStore

    store = index.pipeline.store
    per_hash = store.segments_per_content()
    milvus = sum(per_hash.values())
    out = []
    for h, want in sorted(b.done.items()):
        n = per_hash.pop(h, 0)
        if n < want:
            out.append(Problem("missing rows", h, f"content {h}: {n} Milvus rows, {want} expected"))
        elif n > want:
            out.append(Problem("extra rows", h, f"content {h}: {n} Milvus rows, {want} expected (duplicates)"))
    out += [
        Problem("orphan rows", h, f"{n} Milvus rows of content {h}, which is not indexed") for h, n in per_hash.items()
    ]
    counts = {"milvus_rows": milvus}
    # The local dense index is Milvus Lite's companion: other stores have none.
    lite = store if isinstance(store, MilvusStore) else None
    if lite is not None and lite.local_rebuilt:
        out.append(Problem("local index", str(lite.uri), f"{lite.local_rebuilt}; --repair rebuilds it from Milvus"))
    if lite is not None and lite.local is not None:
        counts["local_rows"] = local = lite.local.count()
        if local != milvus:
            out.append(
                Problem("local index", str(lite.local.path), f"the local dense index has {local} rows, Milvus {milvus}")
            )
    return out, counts


def _permissions(settings: Settings) -> list[Problem]:
    # Before the index opens: opening closes the state folder's top level by itself.
    return [
        Problem("permissions", str(p), f"{p} is {oct(mode)}: open to other users")
        for p, mode in loose_entries(settings.home)
    ]


def _check(settings: Settings, index: Index | None, perms: list[Problem]) -> tuple[list[Problem], dict[str, int]]:
    problems = list(perms)
    if index is None:
        return problems, {}
    b = _books(index)
    problems += _check_books(b)
    store_problems, counts = _check_store(index, b)
    counts.update(paths=len(b.paths), indexed=len(b.done))
    return problems + store_problems, counts


def _subjects(problems: Iterable[Problem], *kinds: str) -> list[str]:
    return [p.subject for p in problems if p.kind in kinds]


def _repair(settings: Settings, index: Index, problems: list[Problem]) -> list[str]:
    done: list[str] = []
    kinds = {p.kind for p in problems}
    if "permissions" in kinds:
        failed = close_entries(loose_entries(settings.home))
        done.append(f"closed permissions ({len(failed)} could not be changed)")
    p = index.pipeline
    gone = _subjects(problems, "stale path", "dangling path")
    if gone:
        done.append(f"forgot {p.remove_paths(gone)} paths")
    if "pathless content" in kinds:
        done.append(f"purged {p.purge_orphans()} contents no path points at")
    orphans = _subjects(problems, "orphan rows")
    if orphans:
        p.store.purge(orphans)
        done.append(f"deleted the rows of {len(orphans)} contents that are not indexed")
    wrong = _subjects(problems, "missing rows", "extra rows")
    if wrong:
        done.append(f"re-embedded {p.refresh(wrong, recaption=False)} contents from their stored text")
    p.store.flush()
    if "local index" in kinds:
        done.append("rebuilt the local dense index from Milvus")  # done by the store when it opened
    return done


def _regular_or_dir(folder: str, names: list[str]) -> list[str]:
    """copytree's ignore: sockets, FIFOs and devices are not state (and cannot be copied)."""
    out = []
    for n in names:
        mode = os.lstat(os.path.join(folder, n)).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
            out.append(n)
    return out


@contextmanager
def _snapshot(settings: Settings) -> Iterator[Settings]:
    """Settings on a private copy of the state: what a check may open without changing the real one."""
    with tempfile.TemporaryDirectory(prefix="pixgrep-doctor-") as tmp:  # 0700
        copy = Path(tmp) / "home"
        shutil.copytree(settings.home, copy, symlinks=True, ignore=_regular_or_dir)
        update: dict[str, Any] = {"home": copy}
        uri = settings.milvus.uri
        if uri and is_lite_uri(uri) and Path(uri).is_relative_to(settings.home):
            update["milvus"] = settings.milvus.model_copy(
                update={"uri": str(copy / Path(uri).relative_to(settings.home))}
            )
        yield settings.model_copy(update=update)


def _check_only(settings: Settings, report: Report) -> None:
    perms = _permissions(settings)
    if not settings.books_exist:
        report.found, report.counts = perms, {}
        return
    from pixgrep.app import Index

    with _snapshot(settings) as copy:
        index = Index(copy, ocr_workers=0)
        try:
            found, report.counts = _check(copy, index, [])
        finally:
            index.close()
    # Subjects name the real state, not the copy.
    where = str(copy.home)
    report.found = perms + [
        Problem(p.kind, p.subject.replace(where, str(settings.home)), p.detail.replace(where, str(settings.home)))
        for p in found
    ]


def diagnose(settings: Settings, *, repair: bool = False) -> Report:
    """Check (and with ``repair`` fix) the index under ``settings.home``; raises AlreadyRunning if a daemon holds it."""
    from pixgrep.app import Index
    from pixgrep.service.instance import running_pid

    pid = running_pid(settings.home)
    if pid is not None:
        raise AlreadyRunning(f"the daemon (pid {pid}) holds {settings.home}; stop it before running doctor", pid)
    report = Report()
    if not repair:
        _check_only(settings, report)
        return report
    has_books = settings.books_exist
    perms = _permissions(settings)
    index = Index(settings, ocr_workers=0) if has_books else None
    try:
        report.found, report.counts = _check(settings, index, perms)
        if report.found:
            if index is not None:
                report.repaired = _repair(settings, index, report.found)
            else:
                failed = close_entries(loose_entries(settings.home))
                report.repaired = [f"closed permissions ({len(failed)} could not be changed)"]
    finally:
        if index is not None:
            index.close()
    # A fresh open: the store rebuilds a cleared local index, and nothing cached hides a problem.
    perms = _permissions(settings)
    index = Index(settings, ocr_workers=0) if has_books else None
    try:
        report.remaining, report.counts = _check(settings, index, perms)
    finally:
        if index is not None:
            index.close()
    return report


def inconsistencies(settings: Settings) -> list[str]:
    """Everything wrong between the books, Milvus, the local dense index and the state's permissions; [] if none.

    The consistency oracle of the tests: call it while no daemon holds the index.
    """
    return [str(p) for p in diagnose(settings).found]
