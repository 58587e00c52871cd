"""Walking folders for image files, with include and exclude globs."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

log = logging.getLogger("pixgrep.scan")


@dataclass(frozen=True)
class FileFilter:
    extensions: tuple[str, ...]
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: object) -> FileFilter:
        s = settings
        return cls(
            extensions=tuple(e.lower() for e in s.image.extensions),  # type: ignore[attr-defined]
            include=tuple(s.watch.include),  # type: ignore[attr-defined]
            exclude=tuple(s.watch.exclude),  # type: ignore[attr-defined]
        )

    def _excluded_name(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pat) for pat in self.exclude if "/" not in pat)

    def dir_ok(self, name: str) -> bool:
        return not self._excluded_name(name)

    def accepts(self, path: str, root: str | None = None) -> bool:
        name = os.path.basename(path)
        if not name.lower().endswith(self.extensions):
            return False
        if self._excluded_name(name):
            return False
        rel = os.path.relpath(path, root) if root else path
        parts = rel.split(os.sep)
        if any(self._excluded_name(p) for p in parts[:-1]):
            return False
        if any(fnmatch.fnmatchcase(rel, pat) for pat in self.exclude if "/" in pat):
            return False
        if self.include:
            return any(fnmatch.fnmatchcase(rel, pat) or fnmatch.fnmatchcase(name, pat) for pat in self.include)
        return True


def walk(roots: Sequence[str], flt: FileFilter) -> Iterator[str]:
    """Yield accepted files under ``roots`` (or the roots themselves if files)."""
    for root in roots:
        if os.path.isfile(root) or (os.path.islink(root) and not os.path.isdir(root)):
            if root.lower().endswith(flt.extensions):
                yield root
            continue

        def onerror(e: OSError) -> None:
            log.warning("cannot list %s: %s", e.filename, e.strerror)

        # followlinks=False: a symlinked folder could loop or escape the root.
        for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if flt.dir_ok(d))
            for name in sorted(filenames):
                path = os.path.join(dirpath, name)
                if flt.accepts(path, root):
                    yield path
