"""What a process tree listens on, from /proc (no psutil), and a second local user to try it with."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

INTRUDER = "pixgrep-intruder"
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _socket_inodes(pid: int) -> set[int]:
    out: set[int] = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return out
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def _decode(addr: str) -> tuple[str, int]:
    host, port = addr.split(":")
    raw = bytes.fromhex(host)
    # /proc/net/tcp prints the address as host-order 32-bit words.
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    packed = b"".join(words)
    if len(packed) == 4:
        return ".".join(str(b) for b in packed), int(port, 16)
    import ipaddress

    return str(ipaddress.IPv6Address(packed)), int(port, 16)


def tcp_listeners(pid: int) -> list[tuple[str, int, int]]:
    """``(address, port, pid)`` of every listening TCP socket that ``pid`` or its children hold."""
    owner: dict[int, int] = {}
    for p in descendants(pid):
        for ino in _socket_inodes(p):
            owner.setdefault(ino, p)
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == _LISTEN and int(f[9]) in owner:
                host, port = _decode(f[1])
                out.append((host, port, owner[int(f[9])]))
    return out


def intruder() -> tuple[int, int] | str:
    """(uid, gid) of a second local user, created when we are root; else why there is none."""
    if os.geteuid() != 0:
        return "not root: cannot create or become a second user"
    if not shutil.which("setpriv") or not Path("/usr/bin/python3").exists():
        return "setpriv or /usr/bin/python3 missing"
    try:
        pw = pwd.getpwnam(INTRUDER)
    except KeyError:
        useradd = shutil.which("useradd")
        if not useradd:
            return "useradd missing"
        subprocess.run(
            [useradd, "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", INTRUDER],
            check=True,
            capture_output=True,
        )
        pw = pwd.getpwnam(INTRUDER)
    return pw.pw_uid, pw.pw_gid


def run_as(ids: tuple[int, int], code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in the system Python (stdlib only) as the other user, with no supplementary groups."""
    uid, gid = ids
    return subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "/usr/bin/python3", "-I", "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
