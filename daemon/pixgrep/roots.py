"""Named roots: the one place a path on this host's disk becomes the key the books store, and back.

A watched folder may have a name (``[roots] nas = "/mnt/nas"``, or ``pixgrep watch /mnt/nas --name nas``).
Files under a named root are booked as ``nas:/rel/path`` (the *key*), so ``/mnt/nas/x.png`` on one host and
``/Volumes/nas/x.png`` on another are one row, OCR'd once. Each host maps the name to its own mount point;
a name this host does not mount stays a key (``nas:/x.png``) wherever a path is shown. Files under no named
root are booked by their absolute path, as before named roots existed.

A key never starts with ``/`` and an absolute path always does: that is how the two are told apart
(``is_key``). The key of the root itself is ``nas:``; a file's is ``nas:/`` + the path relative to the root,
so the books' byte-range queries on a folder (``catalog.path_prefix_range``) work on keys unchanged.
Nested named roots: the longest mount wins, so every host sharing the books must name the same roots.
Pure functions only: ``pixgrep.catalog`` applies them at its edge (paths in, paths out), the rest of the
daemon sees only this host's paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SEP = ":"
# Lower case, so a TOML key and an environment variable (PIXGREP_ROOTS__NAS, folded to lower case) agree.
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class BadRootName(ValueError):
    """A name that cannot name a root, or that clashes with the config's names (one line for the user)."""


def check_name(name: str) -> str:
    """``name`` in lower case if it can name a root, else BadRootName."""
    n = name.strip().lower()
    if not _NAME.fullmatch(n):
        raise BadRootName(
            f"root name {name!r} must be 1-64 letters a-z, digits, '_' or '-' (starting with a letter or digit)"
        )
    return n


def normalize_mount(path: str) -> str:
    """An absolute mount point without a trailing slash (``~`` expanded; symlinks are kept, not resolved:
    a mount point reached through a link is still this host's name for the folder)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def is_key(path: str) -> bool:
    """True for a books key of a named root (``nas:/x.png``), False for a path on a disk."""
    return not path.startswith("/")


_KEY = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}:(/|$)")


def looks_like_key(text: str) -> bool:
    """True for text a user may give as a key (``nas:``, ``nas:/sub``) rather than a relative path."""
    return _KEY.match(text) is not None


def folder_arg(text: str) -> str:
    """A folder the user gave (``--in``): a named root's key as it is (``nas:/sub``, also where this host
    does not mount it), else the path made absolute."""
    return text if looks_like_key(text) else os.path.abspath(text)


def split_key(key: str) -> tuple[str, str] | None:
    """(name, path relative to the root) of a key; None for an absolute path."""
    if not is_key(key) or SEP not in key:
        return None
    name, rel = key.split(SEP, 1)
    return name, rel.lstrip("/")


def make_key(name: str, rel: str) -> str:
    rel = rel.strip("/")
    return f"{name}{SEP}/{rel}" if rel else f"{name}{SEP}"


def _under(path: str, mount: str) -> str | None:
    """``path`` relative to ``mount`` ('' for the mount itself), or None if it is not at or under it."""
    if mount == "/":
        return path.lstrip("/") if path.startswith("/") else None
    if path == mount or path.rstrip("/") == mount:
        return ""
    if path.startswith(mount) and path[len(mount)] == "/":
        return path[len(mount) + 1 :]
    return None


@dataclass(frozen=True)
class RootMap:
    """This host's named roots: name -> mount point. Empty: every path is booked as it is."""

    mounts: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, mounts: Mapping[str, str] | Iterable[tuple[str, str]]) -> RootMap:
        """From name -> mount pairs; ValueError for a bad name, two names on one mount or one name twice."""
        pairs = list(mounts.items()) if isinstance(mounts, Mapping) else list(mounts)
        seen: dict[str, str] = {}
        by_mount: dict[str, str] = {}
        for raw, path in pairs:
            name, mount = check_name(raw), normalize_mount(str(path))
            if seen.get(name, mount) != mount:
                raise ValueError(f"root {name!r} is given two mount points: {seen[name]} and {mount}")
            if by_mount.get(mount, name) != name:
                raise ValueError(f"{mount} is named twice: {by_mount[mount]!r} and {name!r}")
            seen[name], by_mount[mount] = mount, name
        # Longest mount first: a path under nested named roots belongs to the innermost.
        return cls(tuple(sorted(seen.items(), key=lambda nm: (-len(nm[1]), nm[0]))))

    def __bool__(self) -> bool:
        return bool(self.mounts)

    def names(self) -> list[str]:
        return sorted(n for n, _ in self.mounts)

    def mount_of(self, name: str) -> str | None:
        return next((m for n, m in self.mounts if n == name), None)

    def to_key(self, path: str) -> str:
        """The books key of ``path``: ``name:/rel`` under a named root, else ``path`` unchanged (an absolute
        path under no named root, or already a key)."""
        if not self.mounts or is_key(path):
            return path
        for name, mount in self.mounts:
            rel = _under(path, mount)
            if rel is not None:
                return make_key(name, rel)
        return path

    def folders_under(self, path: str) -> list[tuple[str, str]]:
        """(books key, this host's path) of folder ``path`` (a path or a key) and of each named root mounted
        inside it: what the books hold under ``path`` is under these keys."""
        key = self.to_key(path)
        disk = self.to_disk(key)
        out = [(key, disk)]
        if is_key(disk):
            return out  # a root not mounted here: nothing of this host's is inside it
        for name, mount in self.mounts:
            if _under(mount, disk.rstrip("/") or "/") not in (None, ""):
                out.append((make_key(name, ""), mount))
        return out

    def to_disk(self, key: str) -> str:
        """This host's path of a books key; a key of a root not mounted here (and any absolute path) unchanged."""
        parts = split_key(key) if self.mounts else None
        if parts is None:
            return key
        mount = self.mount_of(parts[0])
        if mount is None:
            return key
        rel = parts[1]
        return mount.rstrip("/") + "/" + rel if rel else mount
