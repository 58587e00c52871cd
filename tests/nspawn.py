"""Boot a throwaway systemd container from the host's own root with systemd-nspawn.

No image is downloaded: the host root is bind-mounted (non-recursively, so that
/dev, /proc and the like stay behind) inside a private mount namespace, and
nspawn boots it with ``--volatile=overlay``, so every write lands in a tmpfs
that vanishes with the container. Commands run inside with nsenter, which
needs neither machined nor D-Bus on the host.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

# The host side, run inside `unshare --mount`: nothing it mounts leaks out.
_BOOT = r"""
set -eu
mount --bind / "$NSPAWN_ROOT"
# nspawn keeps its runtime files in /run and refuses to clean them up off tmpfs.
mount -t tmpfs -o mode=0755 tmpfs /run
exec systemd-nspawn "$@"
"""

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class BootError(Exception):
    pass


def unavailable() -> str | None:
    """Why a container cannot be booted here, or None."""
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool in ("systemd-nspawn", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install systemd-container util-linux)"
    if not Path("/usr/lib/systemd/systemd").exists() and not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed in the host root"
    return None


def _same_fs_as_root(path: Path) -> bool:
    try:
        return path.stat().st_dev == Path("/").stat().st_dev
    except OSError:
        return False


def _visible_through_root_bind(path: Path) -> bool:
    # nspawn mounts a fresh tmpfs on /tmp (and the unit's PrivateTmp hides /var/tmp),
    # so a checkout there must be bound in even when it is on the root file system.
    resolved = path.resolve()
    under_tmp = any(resolved == Path(t) or Path(t) in resolved.parents for t in ("/tmp", "/var/tmp"))
    return _same_fs_as_root(path) and not under_tmp


class Container:
    """One booted container; use as a context manager."""

    def __init__(
        self,
        workdir: Path,
        *,
        binds: dict[Path, str] | None = None,
        ro_binds: list[Path] | None = None,
        boot_timeout: float = 60.0,
    ) -> None:
        self.workdir = workdir
        self.name = f"pixgrep-test-{os.getpid()}"
        self.binds = dict(binds or {})
        # The non-recursive root bind shows only the root file system: paths on
        # other mounts (a repo or venv on its own disk) are bound in explicitly.
        self.ro_binds = [p for p in (ro_binds or []) if not _visible_through_root_bind(p)]
        self.boot_timeout = boot_timeout
        self.console = workdir / "console.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    # Lifecycle -----------------------------------------------------------------
    def __enter__(self) -> Self:
        try:
            self.boot()
        except BaseException:
            self.shutdown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    def boot(self) -> None:
        rootdir = self.workdir / "root"
        rootdir.mkdir(parents=True, exist_ok=True)
        args = [
            "--quiet",
            f"--directory={rootdir}",
            "--volatile=overlay",
            # No machined or system bus on the host to register with; the
            # container runs in the caller's cgroup.
            "--register=no",
            "--keep-unit",
            "--link-journal=no",
            "--private-network",
            f"--machine={self.name}",
            *(f"--bind={src}:{dst}" for src, dst in self.binds.items()),
            *(f"--bind-ro={p}" for p in self.ro_binds),
            "--boot",
            # basic.target: everything systemctl needs, none of the host's own
            # services (databases and so on), so boot takes about a second.
            "systemd.unit=basic.target",
        ]
        env = {**os.environ, "NSPAWN_ROOT": str(rootdir)}
        with self.console.open("wb") as out:
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", _BOOT, "sh", *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.boot_timeout
        while not self.init_pid:
            if self.proc.poll() is not None:
                raise BootError(f"systemd-nspawn exited with {self.proc.returncode}:\n{self.console_text()}")
            if time.monotonic() > deadline:
                raise BootError(f"no container init after {self.boot_timeout}s:\n{self.console_text()}")
            self.init_pid = _container_init(self.proc.pid)
            time.sleep(0.05)
        last = ""
        while True:
            res = self.run(["systemctl", "is-system-running", "--wait"], check=False, timeout=self.boot_timeout)
            last = (res.stdout + res.stderr).strip()
            if last in ("running", "degraded"):
                return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BootError(f"container did not finish booting ({last!r}):\n{self.console_text()}")
            time.sleep(0.2)

    def shutdown(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            # nspawn turns SIGTERM into an orderly poweroff of the container.
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        return self.proc.returncode

    def console_text(self, tail: int = 60) -> str:
        try:
            lines = self.console.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-tail:])

    # Inside ----------------------------------------------------------------------
    def run(
        self,
        argv: list[str],
        *,
        check: bool = True,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        input: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in the container (all its namespaces, its root, a clean environment)."""
        base = {"PATH": CONTAINER_PATH, "HOME": "/root", "LANG": "C.UTF-8", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
        envv = [f"{k}={v}" for k, v in {**base, **(env or {})}.items()]
        cmd = ["nsenter", f"--target={self.init_pid}", "--all", "--root", "--wd", "env", "-i", *envv, *argv]
        res = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and res.returncode != 0:
            raise AssertionError(
                f"in container: `{shlex.join(argv)}` exited {res.returncode}\n"
                f"stdout:\n{res.stdout}\nstderr:\n{res.stderr}\n{self.journal(tail=80)}"
            )
        return res

    def sh(self, script: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run(["sh", "-ec", script], **kw)

    def write(self, path: str, text: str, mode: int = 0o644) -> None:
        q = shlex.quote(path)
        self.run(["sh", "-ec", f'mkdir -p "$(dirname {q})"; cat > {q}; chmod {mode:o} {q}'], input=text)

    def journal(self, *args: str, tail: int = 200) -> str:
        try:
            res = self.run(
                ["journalctl", "--no-pager", "-o", "short-monotonic", "-n", str(tail), *args], check=False, timeout=30
            )
        except (subprocess.SubprocessError, OSError) as e:
            return f"(no journal: {e})"
        return f"--- journal {' '.join(args)} ---\n{res.stdout}{res.stderr}"

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "show", unit, *(f"--property={p}" for p in props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, what: str, check: Callable[[], bool], timeout: float, interval: float = 0.25) -> None:
        """conftest.wait_for, with the container's journal on failure."""
        from conftest import wait_for

        wait_for(check, timeout, what, interval=interval, detail=lambda: self.journal(tail=120))


def _container_init(nspawn_pid: int) -> int:
    """The child of ``nspawn_pid`` that is PID 1 of a new PID namespace, or 0.

    Checking the namespace PID matters: before the shell execs nspawn, its
    children are the mount commands.
    """
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            status = Path(f"/proc/{entry}/status").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: fields start after the last ')'.
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[1]) != nspawn_pid:
            continue
        nspid = next((line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")), [])
        if len(nspid) >= 2 and nspid[-1] == "1":
            return int(entry)
    return 0


def open_path_for(user_readable: list[Path]) -> str:
    """Shell that lets any user traverse to each path, in the container's overlay only.

    Debian's /root is 0700 and CI checkouts may sit under 0750 homes; the service
    user must reach the interpreter and the code. chmod inside the overlay
    copies the directory up, so the host is never touched.
    """
    dirs: list[str] = []
    for p in user_readable:
        for parent in p.parents:
            if str(parent) not in dirs and parent != Path("/"):
                dirs.append(str(parent))
    return "for d in " + " ".join(shlex.quote(d) for d in dirs) + '; do chmod o+x "$d" 2>/dev/null || true; done'
