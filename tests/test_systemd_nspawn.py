"""The shipped system unit under a real systemd, booted with systemd-nspawn.

One container is booted for the module (about a second: it is the host's own
root under a tmpfs overlay, see tests/nspawn.py). The first test runs a small
stand-in daemon made of nothing but Notifier under the real unit and its
sandbox, and checks the notify protocol end to end (READY, STATUS, WATCHDOG,
RELOADING, STOPPING) with both transports. The second installs the real
``pixgrep daemon`` with ``pixgrep service install``, drops an image into a
watched folder and finds it with ``pixgrep search`` through the daemon's socket.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nspawn import Container, open_path_for, unavailable
from pixgrep.daemon import units

pytestmark = [pytest.mark.systemd, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)  # the venv's python: not resolved, or the venv is lost
PICTURES = "/home/tester/Pictures"
SOCKET = "/run/pixgrep/api.sock"

_why = unavailable()
if _why:
    pytest.skip(_why, allow_module_level=True)


STANDIN = r'''
import os, signal, sys, time
from pixgrep.daemon.notify import Notifier

n = Notifier(use_systemd_python=None if os.environ.get("NOTIFY_VIA") != "socket" else False)
print(f"standin backend={n.backend} interval={n.watchdog_interval()}", flush=True)
flags = {"hup": False, "term": False}
signal.signal(signal.SIGHUP, lambda *a: flags.__setitem__("hup", True))
signal.signal(signal.SIGTERM, lambda *a: flags.__setitem__("term", True))
n.status("loading models")
time.sleep(0.3)
n.ready()
n.status("0 queued, 0 indexed")
interval = n.watchdog_interval() or 1.0
while not flags["term"]:
    if flags["hup"]:
        flags["hup"] = False
        n.reloading()
        print("standin reloading", flush=True)
        time.sleep(0.3)
        n.status("reloaded: 0 queued, 0 indexed")
        n.ready()
    n.watchdog()
    time.sleep(min(interval, 0.2))
n.stopping()
print("standin stopping", flush=True)
sys.exit(0)
'''


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    work = tmp_path_factory.mktemp("nspawn")
    pictures = work / "pictures"
    pictures.mkdir(mode=0o755)
    pictures.chmod(0o755)
    with Container(work, binds={pictures: PICTURES}, ro_binds=[REPO, Path(sys.prefix), Path(sys.base_prefix)]) as c:
        c.pictures = pictures  # type: ignore[attr-defined]
        # The service user must reach the interpreter and the code (Debian's /root is 0700).
        c.sh(open_path_for([PYTHON, Path(sys.base_prefix) / "bin" / "python3", REPO / "pyproject.toml"]))
        c.write(f"/etc/sysusers.d/{units.SYSUSERS_NAME}", units.SYSUSERS)
        c.run(["systemd-sysusers"])
        # Debug logging makes PID 1 log each notification it receives, which is how
        # the tests see RELOADING=1 and friends arrive.
        c.run(["systemd-analyze", "log-level", "debug"])
        yield c


def _notifications(c: Container, unit: str, since: str = "") -> list[str]:
    args = ["-u", unit, "-o", "cat"] + (["--since", since] if since else [])
    out = c.run(["journalctl", "--no-pager", *args]).stdout
    return [line for line in out.splitlines() if "Got notification message" in line]


def _assert_clean_stop(c: Container, unit: str) -> None:
    c.run(["systemctl", "stop", unit], timeout=120)
    props = c.show(unit, "ActiveState", "Result", "NRestarts")
    assert (props["ActiveState"], props["Result"], props["NRestarts"]) == ("inactive", "success", "0"), (
        props, c.journal("-u", unit))
    # A stopped unit is garbage-collected at once, its exit status with it: the journal keeps it.
    log = c.run(["journalctl", "--no-pager", "-u", unit, "-o", "cat"]).stdout
    assert "Main process exited, code=exited, status=0/SUCCESS" in log, c.journal("-u", unit)
    assert "Failed with result" not in log, c.journal("-u", unit)
    assert any("STOPPING=1" in line for line in _notifications(c, unit)), c.journal("-u", unit)


@pytest.mark.parametrize("via", ["systemd-python", "socket"])
def test_notify_protocol_under_systemd(box: Container, via: str) -> None:
    unit = f"standin-{via}.service"
    box.write("/opt/standin.py", STANDIN)
    text = units.render("system", [str(PYTHON), "/opt/standin.py"])
    box.write(f"/etc/systemd/system/{unit}", text)
    # A short watchdog, so that a missing or mispaced ping would kill it within the test.
    box.write(f"/etc/systemd/system/{unit}.d/test.conf",
              f"[Service]\nWatchdogSec=2s\nEnvironment=NOTIFY_VIA={'socket' if via == 'socket' else 'libsystemd'}\n")
    box.run(["systemctl", "daemon-reload"])
    box.run(["systemctl", "start", unit], timeout=60)  # returns once READY=1 arrived (Type=notify)
    assert box.run(["systemctl", "is-active", unit], check=False).stdout.strip() == "active"
    status = box.show(unit, "StatusText", "MainPID", "User", "WatchdogUSec")
    assert status["StatusText"] == "0 queued, 0 indexed", status
    assert status["WatchdogUSec"] in ("2s", "2000000"), status

    journal = box.run(["journalctl", "--no-pager", "-u", unit, "-o", "cat"]).stdout
    assert f"standin backend={via} interval=1.0" in journal, journal

    time.sleep(3.0)  # longer than WatchdogSec: only the pings keep it alive
    props = box.show(unit, "ActiveState", "NRestarts", "Result")
    assert (props["ActiveState"], props["NRestarts"], props["Result"]) == ("active", "0", "success"), (
        props, box.journal("-u", unit))
    assert any("WATCHDOG=1" in line for line in _notifications(box, unit))

    box.run(["systemctl", "reload", unit], timeout=60)
    box.wait_for("the reload to finish", lambda: box.show(unit, "StatusText")["StatusText"].startswith("reloaded"), 10)
    assert box.run(["systemctl", "is-active", unit], check=False).stdout.strip() == "active"
    notes = _notifications(box, unit)
    reloading = [line for line in notes if "RELOADING=1" in line]
    assert reloading and "MONOTONIC_USEC=" in reloading[0], notes

    _assert_clean_stop(box, unit)
