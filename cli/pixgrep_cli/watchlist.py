"""Adding and removing watched folders in the TOML config, keeping the user's formatting."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import tomlkit
from tomlkit.items import AoT, Table


def _load(path: Path) -> tomlkit.TOMLDocument:
    if path.exists():
        return tomlkit.parse(path.read_text(encoding="utf-8"))
    return tomlkit.document()


def _folders(doc: tomlkit.TOMLDocument, *, create: bool) -> AoT | None:
    watch = doc.get("watch")
    if watch is None:
        if not create:
            return None
        watch = tomlkit.table()
        doc["watch"] = watch
    folders = watch.get("folders")
    if folders is None:
        if not create:
            return None
        folders = tomlkit.aot()
        watch["folders"] = folders
    if not isinstance(folders, AoT):
        # An inline array of tables: rewrite it as [[watch.folders]] blocks.
        aot = tomlkit.aot()
        for f in folders:
            t = tomlkit.table()
            t.update(dict(f))
            aot.append(t)
        watch["folders"] = aot
        folders = aot
    return folders


def _same(a: Any, b: str) -> bool:
    return os.path.abspath(os.path.expanduser(str(a))) == b


def _write(path: Path, doc: tomlkit.TOMLDocument) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(tomlkit.dumps(doc))
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def add_folder(config: Path, folder: str, *, polling: bool = False) -> bool:
    """Add (or update) a watched folder; False if it was already there as asked."""
    folder = os.path.abspath(os.path.expanduser(folder))
    doc = _load(config)
    folders = _folders(doc, create=True)
    assert folders is not None
    for t in folders:
        if _same(t.get("path", ""), folder):
            if bool(t.get("polling", False)) == polling:
                return False
            if polling:
                t["polling"] = True
            elif "polling" in t:
                del t["polling"]
            _write(config, doc)
            return True
    t = tomlkit.table()
    t["path"] = folder
    if polling:
        t["polling"] = True
    folders.append(t)
    _write(config, doc)
    return True


def name_root(config: Path, name: str, folder: str) -> bool:
    """Name a root on this host: ``[roots] name = "folder"`` (pixgrep.roots); False if it was already so.

    ``BadRootName`` if the name is not a valid root name, or the config gives it (or the folder) another
    one: renaming a root would book its files twice, so that stays a deliberate edit of the config.
    """
    from pixgrep.roots import BadRootName, check_name, normalize_mount

    name, folder = check_name(name), normalize_mount(folder)
    doc = _load(config)
    roots = doc.get("roots")
    if roots is None:
        roots = tomlkit.table()
        doc["roots"] = roots
    for other, path in roots.items():
        same_name, same_folder = str(other).lower() == name, normalize_mount(str(path)) == folder
        if same_name and same_folder:
            return False
        if same_name or same_folder:
            raise BadRootName(f"the config already names {path} {other!r}")
    roots[name] = folder
    _write(config, doc)
    return True


def remove_folder(config: Path, folder: str) -> bool:
    """Remove a watched folder; False if it was not in the config."""
    folder = os.path.abspath(os.path.expanduser(folder))
    if not config.exists():
        return False
    doc = _load(config)
    folders = _folders(doc, create=False)
    if folders is None:
        return False
    keep = [t for t in folders if not _same(t.get("path", ""), folder)]
    if len(keep) == len(folders):
        return False
    watch = doc["watch"]
    assert isinstance(watch, Table)
    if keep:
        aot = tomlkit.aot()
        for t in keep:
            aot.append(t)
        watch["folders"] = aot
    else:
        del watch["folders"]
    _write(config, doc)
    return True
