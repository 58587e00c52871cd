"""A daemon started on demand by a search that found none (``search.start_daemon = true``).

Without the daemon a search opens the index itself: 1-4 s, almost all of it start-up (the
embedder, the vectors). With ``search.start_daemon`` the first such search, once it has
printed its results, starts ``pixgrep daemon`` in the background, detached in its own session
with its output in ``$PIXGREP_HOME/daemon.log`` (0600), and says so on stderr; the searches
after it go through the warm daemon (tens of milliseconds). Off by default: a daemon watches
folders and holds memory, which a user should choose. It is an ordinary daemon: stop it as any
other (SIGTERM to the pid printed, or ``systemctl --user stop`` for a unit).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from pixgrep.settings import Settings

Spawn = Callable[..., Any]

LOG_NAME = "daemon.log"


def daemon_env(settings: Settings) -> dict[str, str]:
    """The environment of the daemon: this one, with the state folder and config file this search used."""
    env = dict(os.environ)
    env["PIXGREP_HOME"] = str(settings.home)
    if settings.config_file.exists():
        env["PIXGREP_CONFIG_FILE"] = str(settings.config_file)
    return env


def start_daemon(settings: Settings, *, spawn: Spawn = subprocess.Popen) -> str:
    """Start ``pixgrep daemon`` in the background; the line to print on stderr, saying what happened."""
    from pixgrep.private import private_state

    log = private_state(settings.home) / LOG_NAME
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            proc = spawn(
                [sys.executable, "-m", "pixgrep_cli.main", "daemon"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=daemon_env(settings),
                start_new_session=True,  # not killed with this terminal's process group, nor waited for
                close_fds=True,
            )
    except OSError as e:
        return f"could not start a daemon in the background ({e}); searches open the index themselves"
    return (
        f"started a daemon in the background (pid {proc.pid}, log {log}); the next search goes through it "
        "(search.start_daemon)"
    )
