"""The shipped units under a real systemd, booted with systemd-nspawn.

One container is booted for the module (about a second: it is the host's own
root under a tmpfs overlay, see tests/nspawn.py). PID 1 in it logs at debug
level, which makes it log every sd_notify message it receives: that is how
these tests see READY=1, RELOADING=1 and the rest arrive.

- A stand-in daemon made of nothing but Notifier runs under the real system
  unit and its sandbox: the notify protocol end to end, with both transports,
  and a 2 s watchdog that only its pings keep at bay.
- The real ``pixgrep daemon``, installed with ``pixgrep service install``:
  an image dropped into the watched folder is found by ``pixgrep search``
  through the daemon's socket; reload; a clean stop.
- The same for the user unit under a user manager (``systemctl --user``).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nspawn import Container, open_path_for, unavailable
from pixgrep_cli import units

# Starts the daemon under systemd in a container.
pytestmark = [pytest.mark.slow, pytest.mark.systemd, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parent.parent
PYTHON = Path(sys.executable)  # the venv's python: not resolved, or the venv is lost
PIXGREP = str(units.pixgrep_command()[0]) if len(units.pixgrep_command()) == 1 else ""
# A checkout under /tmp (CI may clone there) is invisible behind the units' PrivateTmp=yes;
# only then do the tests' drop-ins turn it off.
_TMPS = (Path("/tmp"), Path("/var/tmp"))
TMP_FIX = "PrivateTmp=no\n" if any(t in p.resolve().parents for t in _TMPS for p in (REPO, Path(sys.prefix))) else ""
PICTURES = "/home/tester/Pictures"
DROP = "/srv/drop"
# How root's CLI finds the system service: the two variables its unit sets.
SYSTEM_CLI_ENV = {"XDG_CONFIG_HOME": "/etc", "XDG_RUNTIME_DIR": "/run"}
WORD = "zebra"

_why = unavailable()
if _why:
    pytest.skip(_why, allow_module_level=True)


STANDIN = r"""
import os, signal, sys, time
from pixgrep.service.notify import Notifier

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
"""


class Box(Container):
    pictures: Path  # host side of PICTURES
    drop: Path  # host side of DROP


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Box]:
    work = tmp_path_factory.mktemp("nspawn")
    pictures = work / "pictures"
    drop = work / "drop"
    for d in (pictures, drop):
        d.mkdir()
        d.chmod(0o755)
    binds = {pictures: PICTURES, drop: DROP}
    with Box(work, binds=binds, ro_binds=[REPO, Path(sys.prefix), Path(sys.base_prefix)]) as c:
        # The service users must reach the interpreter and the code (Debian's /root is 0700).
        c.sh(open_path_for([PYTHON, Path(sys.base_prefix) / "bin" / "python3", REPO / "pyproject.toml"]))
        c.run(["systemd-analyze", "log-level", "debug"])
        c.pictures = pictures
        c.drop = drop
        yield c


def _image(path: Path) -> None:
    """A screenshot-like PNG with WORD in it, renamed into place as screenshot tools do."""
    from imgs import render

    tmp = path.with_name(f".{path.name}.part")
    render(tmp, [f"NSPAWN {WORD.upper()}"], fmt="PNG")
    tmp.chmod(0o644)
    tmp.rename(path)


class Unit:
    """A unit of the system manager, or of the user manager of ``user``."""

    def __init__(self, c: Container, name: str, user: str | None = None) -> None:
        self.c = c
        self.name = name
        self.user = user
        self.uid = c.run(["id", "-u", user]).stdout.strip() if user else "0"

    def as_owner(self, argv: list[str]) -> list[str]:
        if self.user is None:
            return argv
        return [
            "runuser",
            "-u",
            self.user,
            "--",
            "env",
            f"XDG_RUNTIME_DIR=/run/user/{self.uid}",
            f"HOME=/home/{self.user}",
            *argv,
        ]

    def run(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.c.run(self.as_owner(argv), **kw)

    def systemctl(self, *args: str, check: bool = True, timeout: float = 120) -> str:
        argv = ["systemctl", *(["--user"] if self.user else []), *args]
        res = self.c.run(self.as_owner(argv), check=False, timeout=timeout)
        if check and res.returncode != 0:
            pytest.fail(f"`{shlex.join(argv)}` exited {res.returncode}: {res.stderr}\n{self.log_tail()}")
        return res.stdout.strip()

    def show(self, *props: str) -> dict[str, str]:
        out = self.systemctl("show", self.name, *(f"--property={p}" for p in props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self) -> list[str]:
        match = (
            [f"_SYSTEMD_UNIT={self.name}", "+", f"UNIT={self.name}"]
            if self.user is None
            else [f"_SYSTEMD_USER_UNIT={self.name}", "+", f"USER_UNIT={self.name}"]
        )
        out = self.c.run(["journalctl", "--no-pager", "-o", "cat", *match]).stdout
        return out.splitlines()

    def notifications(self) -> list[str]:
        return [line for line in self.journal() if "Got notification message" in line]

    def log_tail(self, n: int = 120) -> str:
        return f"--- journal of {self.name} ---\n" + "\n".join(self.journal()[-n:])

    def assert_active(self) -> None:
        assert self.systemctl("is-active", self.name, check=False) == "active", self.log_tail()

    def reload_and_check(self) -> None:
        pid = self.show("MainPID")["MainPID"]
        before = len(self.notifications())
        self.systemctl("reload", self.name)
        self.c.wait_for(
            f"{self.name} to finish reloading",
            lambda: any("READY=1" in line for line in self.notifications()[before:]),
            30,
        )
        self.assert_active()
        assert self.show("MainPID")["MainPID"] == pid, "a reload must not restart the daemon"
        new = self.notifications()[before:]
        reloading = [line for line in new if "RELOADING=1" in line]
        assert reloading and "MONOTONIC_USEC=" in reloading[0], "\n".join(new)

    def stop_and_check(self) -> None:
        self.systemctl("stop", self.name)
        props = self.show("ActiveState", "Result", "NRestarts")
        assert (props["ActiveState"], props["Result"], props["NRestarts"]) == ("inactive", "success", "0"), (
            props,
            self.log_tail(),
        )
        # A stopped unit is garbage-collected at once, its exit status with it: the journal keeps it.
        log = "\n".join(self.journal())
        assert "Main process exited, code=exited, status=0/SUCCESS" in log, self.log_tail()
        assert "Failed with result" not in log and "Watchdog timeout" not in log, self.log_tail()
        assert any("STOPPING=1" in line for line in self.notifications()), self.log_tail()


# The notify protocol with a stand-in -----------------------------------------------
@pytest.mark.parametrize("via", ["systemd-python", "socket"])
def test_notify_protocol_under_systemd(box: Box, via: str) -> None:
    unit = Unit(box, f"standin-{via}.service")
    box.write(f"/etc/sysusers.d/{units.SYSUSERS_NAME}", units.SYSUSERS)
    box.run(["systemd-sysusers"])  # the unit's User=pixgrep
    box.write("/opt/standin.py", STANDIN)
    # The real system unit, sandbox and all, running the stand-in instead of pixgrep.
    box.write(f"/etc/systemd/system/{unit.name}", units.render("system", [str(PYTHON), "/opt/standin.py"]))
    # A short watchdog, so that a missing or mispaced ping would kill it within the test.
    box.write(
        f"/etc/systemd/system/{unit.name}.d/test.conf",
        f"[Service]\nWatchdogSec=2s\nEnvironment=NOTIFY_VIA={'socket' if via == 'socket' else 'auto'}\n{TMP_FIX}",
    )
    box.run(["systemctl", "daemon-reload"])
    unit.systemctl("start", unit.name)  # returns once READY=1 arrived (Type=notify)
    unit.assert_active()
    props = unit.show("StatusText", "WatchdogUSec")
    assert props["StatusText"] == "0 queued, 0 indexed", props
    assert f"standin backend={via} interval=1.0" in unit.journal(), unit.log_tail()

    time.sleep(3.0)  # longer than WatchdogSec: only the pings keep it alive
    props = unit.show("ActiveState", "NRestarts", "Result")
    assert (props["ActiveState"], props["NRestarts"], props["Result"]) == ("active", "0", "success"), (
        props,
        unit.log_tail(),
    )
    assert sum("WATCHDOG=1" in line for line in unit.notifications()) >= 10

    unit.reload_and_check()
    assert unit.show("StatusText")["StatusText"].startswith("reloaded"), unit.log_tail()
    unit.stop_and_check()


# The real daemon ---------------------------------------------------------------------
def _search(c: Container, unit: Unit, env: dict[str, str] | None = None) -> list[dict[str, object]]:
    res = c.run(unit.as_owner([PIXGREP, "search", WORD, "--json"]), env=env, check=False, timeout=60)
    return [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]


def _status(c: Container, unit: Unit, env: dict[str, str] | None = None) -> dict[str, object]:
    res = c.run(unit.as_owner([PIXGREP, "status", "--json"]), env=env, timeout=60)
    return dict(json.loads(res.stdout))


def test_system_service(box: Box) -> None:
    assert PIXGREP, "pixgrep is not installed as a console script next to this python"
    unit = Unit(box, "pixgrep.service")
    out = box.run([PIXGREP, "service", "install", "--no-start"]).stdout
    assert "systemctl enable pixgrep.service" in out
    text = box.run(["cat", "/etc/systemd/system/pixgrep.service"]).stdout
    assert f"ExecStart={units.quote_exec([PIXGREP])} daemon" in text.splitlines()
    box.run([PIXGREP, "watch", PICTURES], env=SYSTEM_CLI_ENV)
    # Pings are due every 2.5 s: a main loop that stopped pinging would be killed during the test.
    # A start that never signals READY fails within the test's time, with the journal to show.
    box.write(
        "/etc/systemd/system/pixgrep.service.d/test.conf", f"[Service]\nWatchdogSec=5s\nTimeoutStartSec=120s\n{TMP_FIX}"
    )
    box.run(["systemctl", "daemon-reload"])

    started = time.monotonic()
    unit.systemctl("start", unit.name, timeout=150)  # Type=notify: returns once READY=1 arrived
    ready_at = time.monotonic()
    startup = ready_at - started
    unit.assert_active()
    pid = unit.show("MainPID")["MainPID"]
    assert any(f"from PID {pid} (READY=1" in line for line in unit.notifications()), unit.log_tail()
    assert _owner(box, pid) == "pixgrep"
    assert "ro" in _mount_options(box, pid, "/")  # ProtectSystem=strict
    assert "ro" in _mount_options(box, pid, PICTURES)  # ProtectHome=read-only

    dropped = time.monotonic()
    _image(box.pictures / f"{WORD}.png")
    hit = f"{PICTURES}/{WORD}.png"
    box.wait_for(
        f"{hit} to be searchable",
        lambda: any(r["path"] == hit for r in _search(box, unit, SYSTEM_CLI_ENV)),
        90,
        interval=0.5,
    )
    freshness = time.monotonic() - dropped
    daemon = _status(box, unit, SYSTEM_CLI_ENV)["daemon"]
    assert isinstance(daemon, dict) and daemon["running"] and str(daemon["pid"]) == pid, daemon
    assert "indexed" in unit.show("StatusText")["StatusText"], unit.log_tail()

    unit.reload_and_check()
    assert any("reloaded config" in line for line in unit.journal()), unit.log_tail()
    # Outlive WatchdogSec after READY: only the main loop's pings keep the daemon alive.
    time.sleep(max(0.0, ready_at + 6.0 - time.monotonic()))
    unit.assert_active()
    assert sum("WATCHDOG=1" in line for line in unit.notifications()) >= 2, unit.log_tail()
    unit.stop_and_check()
    print(f"system service: start {startup:.1f}s, drop to searchable {freshness:.1f}s")


def _owner(c: Container, pid: str) -> str:
    return c.run(["stat", "-c", "%U", f"/proc/{pid}"]).stdout.strip()


def _mount_options(c: Container, pid: str, mountpoint: str) -> list[str]:
    """The options of the topmost mount at ``mountpoint`` as process ``pid`` sees it."""
    found: list[str] = []
    for line in c.run(["cat", f"/proc/{pid}/mountinfo"]).stdout.splitlines():
        fields = line.split()
        if fields[4] == mountpoint:
            found = fields[5].split(",")
    return found


def test_user_service(box: Box) -> None:
    assert PIXGREP, "pixgrep is not installed as a console script next to this python"
    box.run(["useradd", "--create-home", "--shell", "/bin/sh", "alice"])
    uid = box.run(["id", "-u", "alice"]).stdout.strip()
    box.run(["systemctl", "start", f"user@{uid}.service"], timeout=60)
    unit = Unit(box, "pixgrep.service", user="alice")
    unit.run(["systemd-analyze", "--user", "log-level", "debug"])
    pictures = "/home/alice/Pictures"
    unit.run(["mkdir", "-p", pictures])
    unit.run([PIXGREP, "service", "install", "--user", "--no-start"])
    unit.run([PIXGREP, "watch", pictures])
    dropin = "/home/alice/.config/systemd/user/pixgrep.service.d"
    conf = "[Service]\\nTimeoutStartSec=120s\\n" + TMP_FIX.replace("\n", "\\n")
    unit.run(["sh", "-ec", f"mkdir -p {dropin}; printf '{conf}' > {dropin}/test.conf"])
    unit.systemctl("daemon-reload")
    assert unit.show("TimeoutStartUSec")["TimeoutStartUSec"] == "2min"

    unit.systemctl("start", unit.name, timeout=150)
    unit.assert_active()
    pid = unit.show("MainPID")["MainPID"]
    assert _owner(box, pid) == "alice"
    # The sandbox is really on: without PrivateUsers=yes systemd 252 skips it silently.
    assert "ro" in _mount_options(box, pid, "/"), _mount_options(box, pid, "/")
    # IPAddressDeny= is not: a user manager cannot attach its BPF filter and says so. The unit's comment and
    # README's "Private by default" say the same, and rely on the daemon having no listener another user can use.
    assert any("configures an IP firewall, but not running as root" in line for line in unit.journal()), unit.log_tail()

    _image(box.drop / f"{WORD}.png")
    unit.run(
        ["sh", "-ec", f"cp {DROP}/{WORD}.png {pictures}/.{WORD}.tmp; mv {pictures}/.{WORD}.tmp {pictures}/{WORD}.png"]
    )
    hit = f"{pictures}/{WORD}.png"
    box.wait_for(f"{hit} to be searchable", lambda: any(r["path"] == hit for r in _search(box, unit)), 90, interval=0.5)
    daemon = _status(box, unit)["daemon"]
    assert isinstance(daemon, dict) and str(daemon["pid"]) == pid, daemon
    # The index is the one the CLI would open by itself, not one of the unit's own.
    assert box.run(["test", "-e", "/home/alice/.local/state/pixgrep/pixgrep.sqlite"], check=False).returncode == 0

    unit.reload_and_check()
    unit.stop_and_check()
