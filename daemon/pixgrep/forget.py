"""``pixgrep unwatch PATH --forget``: remove exactly PATH's images, never a still-watched folder's.

``unwatch / --forget`` used to wipe the whole index, watched children included, and
``unwatch P --forget`` on a folder that wasn't watched said "P was not watched" yet
removed everything under it (issue 9, defect 4). The rule now:

* the images under PATH are removed, except those under a folder that stays
  watched below PATH (they are kept, and the answer names those folders);
* if PATH lies inside a folder that stays watched, nothing is removed: the
  rescan would index the images again, so the request is refused with the reason.

Both the daemon's backend and the CLI's local one call :func:`plan` and :func:`forget`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pixgrep.errors import PixgrepError


class ForgetRefused(PixgrepError):
    """PATH lies inside a folder that stays watched; nothing was removed."""


def _abs(p: str) -> str:
    return os.path.abspath(os.path.expanduser(p))


def _under(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or below it."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


@dataclass(frozen=True)
class Plan:
    path: str
    keep: list[str] = field(default_factory=list)  # watched folders below path: their images stay


def plan(path: str, watched: Iterable[str]) -> Plan:
    """What ``--forget`` of ``path`` may remove, given the folders that stay watched (``path`` itself excluded).

    Raises ForgetRefused when a folder that stays watched contains ``path``.
    """
    path = _abs(path)
    others = sorted({_abs(w) for w in watched} - {path})
    for w in others:
        if _under(path, w):
            raise ForgetRefused(
                f"{path} is inside the watched folder {w}: its images would be indexed again; "
                f"nothing was forgotten (unwatch {w} first)"
            )
    return Plan(path, [w for w in others if _under(w, path)])


def forget(pipeline: Any, p: Plan) -> int:
    """Remove the images under ``p.path`` but not under ``p.keep``; returns how many paths were forgotten."""
    return int(pipeline.remove_tree(p.path, keep=p.keep))


def summary(path: str, *, was_watched: bool, forgotten: int, kept: list[str]) -> str:
    """One line saying what ``unwatch --forget`` did."""
    head = f"stopped watching {path}" if was_watched else f"{path} was not watched"
    line = f"{head}; forgot {forgotten} indexed files under it"
    if kept:
        line += f", kept those under the watched folder{'s' if len(kept) > 1 else ''} {', '.join(kept)}"
    return line
