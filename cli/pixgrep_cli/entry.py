"""The ``pixgrep`` console script: a stdlib-only fast path for searches the daemon answers, else the full CLI."""

from __future__ import annotations

import os
import sys


def run() -> None:
    if "search" in sys.argv[1:4]:
        from pixgrep_cli.fast import search

        try:
            code = search(sys.argv[1:])
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(0)
        if code is not None:
            sys.exit(code)
    from pixgrep_cli.main import run as full

    full()
