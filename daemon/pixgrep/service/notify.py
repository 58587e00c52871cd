"""sd_notify(3) for the daemon: readiness, status, watchdog, reload and stop."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping

log = logging.getLogger(__name__)


def _load_sd_notify() -> Callable[[str], bool] | None:
    try:
        from systemd.daemon import notify  # type: ignore[import-not-found]
    except ImportError:
        return None
    return notify  # type: ignore[no-any-return]


class Notifier:
    """Tell the service manager about the daemon's state (``Type=notify`` units).

    Every method is a cheap no-op when ``NOTIFY_SOCKET`` is unset, i.e. when the
    daemon does not run under systemd, so callers need no checks of their own.
    Messages go through systemd-python's ``systemd.daemon.notify`` when it is
    installed (the ``systemd`` extra) and through a plain ``AF_UNIX`` datagram
    socket otherwise; both accept abstract-namespace addresses (``@name``).

    The environment is read once, at construction: build one Notifier at
    start-up. Methods return whether the message was sent and never raise, so
    a broken notification socket cannot take the daemon down.

    Protocol duties of the caller: call :meth:`ready` once start-up is done and
    again after each reload; call :meth:`watchdog` at least every
    :meth:`watchdog_interval` seconds from the loop whose liveness it vouches for.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, use_systemd_python: bool | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address: str | None = env.get("NOTIFY_SOCKET") or None
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        sd_notify = _load_sd_notify() if use_systemd_python is not False else None
        if use_systemd_python and sd_notify is None:
            raise ImportError("systemd-python is not installed (pip install 'pixgrep[systemd]')")
        # libsystemd reads NOTIFY_SOCKET itself at each call; it can only be used
        # when that is the address captured here.
        if sd_notify is not None and os.environ.get("NOTIFY_SOCKET") != self.address:
            sd_notify = None
        self._sd_notify = sd_notify
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def backend(self) -> str:
        """``"systemd-python"``, ``"socket"``, or ``"none"`` without ``NOTIFY_SOCKET``."""
        if not self.enabled:
            return "none"
        return "systemd-python" if self._sd_notify is not None else "socket"

    # The messages ----------------------------------------------------------
    def ready(self) -> bool:
        return self.notify("READY=1")

    def status(self, text: str) -> bool:
        # The protocol is newline-separated assignments: a newline would end the value.
        return self.notify("STATUS=" + " ".join(text.splitlines()))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self) -> bool:
        # systemd >= 253 (Type=notify-reload) wants the CLOCK_MONOTONIC time of the
        # reload request so it can tell this reload from an earlier one; older
        # managers ignore the unknown field.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def stopping(self) -> bool:
        return self.notify("STOPPING=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start (or stop) timeout fires, e.g. while models load."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """Seconds between :meth:`watchdog` pings (half the timeout), or None when no watchdog is on."""
        if not self.enabled:
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0:
            return None
        if self._watchdog_pid:
            try:
                if int(self._watchdog_pid) != os.getpid():
                    return None  # the watchdog is meant for another process (we were forked or exec'd)
            except ValueError:
                return None
        return usec / 2 / 1_000_000

    # Transport ---------------------------------------------------------------
    def notify(self, message: str) -> bool:
        """Send raw ``KEY=value`` lines; False when not under systemd or sending failed."""
        if self.address is None:
            return False
        try:
            if self._sd_notify is not None:
                return bool(self._sd_notify(message))
            return self._send(message.encode())
        except Exception as e:  # notifications are advisory; never let them kill the daemon
            if not self._warned:
                self._warned = True
                log.warning("cannot notify the service manager at %s: %s", self.address, e)
            return False

    def _send(self, data: bytes) -> bool:
        assert self.address is not None
        addr = self.address
        if addr.startswith("@"):
            addr = "\0" + addr[1:]
        elif not addr.startswith("/"):
            # vsock: and other transports are for VMs; the daemon does not run there.
            raise OSError(f"unsupported NOTIFY_SOCKET address {self.address!r}")
        with self._lock:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock = self._sock
        return sock.sendto(data, addr) == len(data)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None
