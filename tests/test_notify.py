"""Notifier: the sd_notify datagrams it sends, over both transports."""

from __future__ import annotations

import logging
import os
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from pixgrep.service.notify import Notifier

try:
    import systemd.daemon  # type: ignore[import-not-found]  # noqa: F401

    HAVE_SYSTEMD_PYTHON = True
except ImportError:
    HAVE_SYSTEMD_PYTHON = False

BACKENDS = [
    pytest.param(
        True,
        id="systemd-python",
        marks=pytest.mark.skipif(not HAVE_SYSTEMD_PYTHON, reason="systemd-python not installed"),
    ),
    pytest.param(False, id="socket"),
]


class Listener:
    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address

    def recv(self) -> str:
        return self.sock.recv(4096).decode()

    def pending(self) -> list[str]:
        out = []
        self.sock.setblocking(False)
        try:
            while True:
                out.append(self.recv())
        except BlockingIOError:
            return out
        finally:
            self.sock.setblocking(True)


@pytest.fixture(params=["path", "abstract"])
def listener(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """A bound datagram socket standing in for PID 1, with NOTIFY_SOCKET pointing at it."""
    for var in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(var, raising=False)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(5)
    # tmp_path can exceed sun_path's 108 bytes; a short directory cannot.
    with tempfile.TemporaryDirectory(prefix="pgn") as d:
        if request.param == "path":
            address = str(Path(d) / "notify")
            sock.bind(address)
        else:
            name = f"pixgrep-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            address = "@" + name
        monkeypatch.setenv("NOTIFY_SOCKET", address)
        try:
            yield Listener(sock, address)
        finally:
            sock.close()


@pytest.mark.parametrize("use_systemd_python", BACKENDS)
def test_messages(listener: Listener, use_systemd_python: bool) -> None:
    n = Notifier(use_systemd_python=use_systemd_python)
    assert n.enabled
    assert n.backend == ("systemd-python" if use_systemd_python else "socket")

    assert n.ready()
    assert listener.recv() == "READY=1"
    assert n.status("12 queued,\n3400 indexed")
    assert listener.recv() == "STATUS=12 queued, 3400 indexed"
    assert n.watchdog()
    assert listener.recv() == "WATCHDOG=1"

    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert n.reloading()
    lines = listener.recv().split("\n")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert lines[0] == "RELOADING=1"
    key, value = lines[1].split("=")
    assert key == "MONOTONIC_USEC" and before <= int(value) <= after
    assert len(lines) == 2

    assert n.extend_timeout(1.5)
    assert listener.recv() == "EXTEND_TIMEOUT_USEC=1500000"
    assert n.stopping()
    assert listener.recv() == "STOPPING=1"
    assert listener.pending() == []
    n.close()


def test_fallback_when_systemd_python_is_missing(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "systemd.daemon", None)  # `from systemd.daemon import notify` fails
    n = Notifier()
    assert n.backend == "socket"
    assert n.ready()
    assert listener.recv() == "READY=1"
    with pytest.raises(ImportError, match="systemd-python"):
        Notifier(use_systemd_python=True)


@pytest.mark.skipif(not HAVE_SYSTEMD_PYTHON, reason="systemd-python not installed")
def test_auto_prefers_systemd_python(listener: Listener) -> None:
    assert Notifier().backend == "systemd-python"


def test_environ_argument_is_honoured(listener: Listener, monkeypatch: pytest.MonkeyPatch) -> None:
    # libsystemd only reads the process environment, so a Notifier built from
    # another mapping has to send by itself.
    env = {"NOTIFY_SOCKET": listener.address}
    monkeypatch.delenv("NOTIFY_SOCKET")
    n = Notifier(env)
    assert n.backend == "socket"
    assert n.ready()
    assert listener.recv() == "READY=1"


@pytest.mark.parametrize("use_systemd_python", BACKENDS)
def test_no_notify_socket_means_no_ops(monkeypatch: pytest.MonkeyPatch, use_systemd_python: bool) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    n = Notifier(use_systemd_python=use_systemd_python)
    assert not n.enabled and n.backend == "none"
    for call in (n.ready, n.watchdog, n.reloading, n.stopping, lambda: n.status("x")):
        assert call() is False
    assert n.watchdog_interval() is None


@pytest.mark.parametrize("use_systemd_python", BACKENDS)
def test_send_errors_are_swallowed_and_logged_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, use_systemd_python: bool, tmp_path: Path
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens"))
    n = Notifier(use_systemd_python=use_systemd_python)
    with caplog.at_level(logging.WARNING, logger="pixgrep.service.notify"):
        assert n.ready() is False
        assert n.watchdog() is False
    assert len([r for r in caplog.records if "cannot notify" in r.message]) == 1


def test_unsupported_address_is_not_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert Notifier(use_systemd_python=False).ready() is False


@pytest.mark.parametrize(
    ("usec", "pid", "expected"),
    [
        ("4000000", None, 2.0),
        ("60000000", "self", 30.0),
        ("500", None, 0.00025),
        ("4000000", "other", None),  # meant for another process
        ("4000000", "junk", None),
        ("0", None, None),
        ("-5", None, None),
        ("", None, None),
        ("soon", None, None),
        (None, None, None),
    ],
)
def test_watchdog_interval(
    listener: Listener, monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None, expected: float | None
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", {"self": str(os.getpid()), "other": str(os.getpid() + 1)}.get(pid, pid))
    assert Notifier().watchdog_interval() == expected
