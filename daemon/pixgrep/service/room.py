"""A daemon started on a full disk waits for room instead of crash-looping (issue 9, defect 6).

Start-up writes the pid file, the books (queue recovery, the heartbeat) and Milvus Lite's
files; on a full disk each of those fails, and a service manager that restarts the daemon
after every failure soon gives up on it for good. So, before it opens anything, the daemon
checks for room, says once that there is none, and checks again every few seconds, telling
systemd that it is still starting; once there is room it starts as usual.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path

from pixgrep import diskfull
from pixgrep.errors import DiskFull
from pixgrep.service.notify import Notifier

log = logging.getLogger("pixgrep.service")

CHECK_EVERY = 10.0


def wait_for_room(
    home: Path,
    *,
    interval: float = CHECK_EVERY,
    notifier: Notifier | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Return once the file system holding ``home`` has room; returns how many checks found none.

    SIGTERM meanwhile ends the process as it would any command (nothing is open yet).
    """
    if not diskfull.no_room(home):
        return 0
    full = DiskFull(str(home), errno.ENOSPC)
    log.warning("%s; waiting for room before starting (checking every %.0fs)", full, interval)
    notify = notifier or Notifier()
    waits = 0
    try:
        while diskfull.no_room(home):
            waits += 1
            notify.status(f"{full}; waiting for room before starting")
            # Not ready yet, and not stuck: keep systemd's start timeout from firing while we wait.
            notify.extend_timeout(3 * interval)
            sleep(interval)
    finally:
        if notifier is None:
            notify.close()
    log.warning("there is room on %s again; starting", home)
    return waits
