"""What ``pixgrep search`` does with its results: print them (text, JSON, bare paths, NUL-separated,
with --explain or inline previews) and open one."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from pixgrep_cli.fast import print_results

NO_GOOD_MATCH = "no good match (--all shows the nearest anyway)"


@dataclass(frozen=True)
class Show:
    as_json: bool = False
    paths: bool = False
    nul: bool = False
    open_n: int | None = None
    preview: bool = False
    explain: bool = False
    all: bool = False

    @property
    def quiet(self) -> bool:
        """Output for a program: no notes on stderr beyond errors."""
        return self.as_json or self.paths or self.nul


def _err(msg: str) -> None:
    sys.stderr.write(f"pixgrep: {msg}\n")


def _write(text: str) -> None:
    # File names that aren't UTF-8 come out as their original bytes.
    sys.stdout.buffer.write(text.encode(sys.stdout.encoding or "utf-8", "surrogateescape"))


def show_results(results: list[dict[str, Any]], show: Show) -> int:
    """Print ``results`` as asked and open one if asked; the exit code (1: nothing found)."""
    if not results:
        if not (show.as_json or show.paths or show.nul):
            _err("no matches" if show.all else NO_GOOD_MATCH)
        return 1
    if show.nul or show.paths:
        sep = "\0" if show.nul else "\n"
        _write("".join(r["path"] + sep for r in results))
        sys.stdout.flush()
    elif show.as_json or not (show.explain or show.preview):
        print_results(results, as_json=show.as_json)
    else:
        _print_annotated(results, show)
    if show.open_n is not None:
        return open_result(results, show.open_n)
    return 0


def _print_annotated(results: list[dict[str, Any]], show: Show) -> None:
    """Each result line, then its --explain lines and its --preview thumbnail."""
    for r in results:
        print_results([r], as_json=False)
        if show.explain:
            from pixgrep.results import explain

            _write("".join(f"    {line}\n" for line in explain(r)))
        if show.preview:
            preview(r["path"])
    sys.stdout.flush()


def open_result(results: list[dict[str, Any]], n: int) -> int:
    """Open result ``n`` (1-based) with xdg-open, detached."""
    if not 1 <= n <= len(results):
        _err(f"--open {n}: there are {len(results)} results")
        return 64  # ExitCode.USAGE
    opener = shutil.which("xdg-open")
    if opener is None:
        _err("--open needs xdg-open (apt install xdg-utils)")
        return 69  # ExitCode.UNAVAILABLE
    path = results[n - 1]["path"]
    if not path.startswith("/"):
        _err(f"--open {n}: {path} is on a named root not mounted on this host ([roots] in the config)")
        return 66  # ExitCode.NOINPUT
    subprocess.Popen(
        [opener, path],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return 0


_warned = False


def preview(path: str, width: int = 40) -> None:
    """An inline thumbnail: chafa when installed, else textual-image (kitty, sixel or half blocks), else nothing."""
    if not sys.stdout.isatty() or not path.startswith("/"):
        return  # text only into pipes and files, and for a named root not mounted here (nas:/x.png)
    sys.stdout.flush()
    chafa = shutil.which("chafa")
    if chafa:
        subprocess.run([chafa, f"--size={width}x{width // 2}", path], check=False, stderr=subprocess.DEVNULL)
        return
    try:
        # textual-image sizes its cells from the terminal when imported: a terminal that reports
        # no size (0x0) made it divide by zero. Any failure of this optional renderer means text only.
        from rich.console import Console
        from textual_image.renderable import Image

        Console().print(Image(path, width=width))
    except ImportError:
        _warn_once("--preview needs chafa or textual-image (pip install 'pixgrep[preview]'); text only")
    except (OSError, ValueError) as e:
        _err(f"cannot preview {os.path.basename(path)}: {e}")
    except Exception as e:
        _warn_once(f"--preview cannot draw on this terminal ({type(e).__name__}: {e}); text only")


def _warn_once(msg: str) -> None:
    global _warned
    if not _warned:
        _err(msg)
        _warned = True
