"""systemd units for the daemon: the unit texts, rendering them, installing them.

The texts below are the source of ``systemd/pixgrep.service``,
``systemd/pixgrep-user.service`` and ``systemd/pixgrep.sysusers.conf`` in the
repository; a test keeps those files identical to them (regenerate with
``python -m pixgrep_cli.units DIR``). They live here rather than as package
data so that an installed wheel can write a unit without the repository.
"""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Scope = Literal["system", "user"]

UNIT_NAME = "pixgrep.service"
SERVICE_USER = "pixgrep"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")
SYSUSERS_DIR = Path("/etc/sysusers.d")
SYSUSERS_NAME = "pixgrep.conf"

# What the shipped files run: a system-wide `pip install` puts `pixgrep` in
# /usr/local/bin, which is on the manager's PATH. `pixgrep service install`
# replaces the line with the absolute path of the pixgrep actually installed.
TEMPLATE_EXEC_START = "/usr/bin/env pixgrep daemon"

SYSTEM_UNIT = """\
# pixgrep system service: indexes the folders in /etc/pixgrep/config.toml into
# /var/lib/pixgrep and serves /run/pixgrep/api.sock. `pixgrep service install`
# writes this to /etc/systemd/system with ExecStart pointing at the installed
# pixgrep, and creates the pixgrep user. The CLI reaches this daemon with the
# same two variables the unit sets below, e.g.
#   sudo XDG_CONFIG_HOME=/etc XDG_RUNTIME_DIR=/run pixgrep watch /home/me/Pictures
[Unit]
Description=pixgrep image indexer (grep for pictures)
Documentation=https://github.com/pixgrep/pixgrep#readme
# Watched folders may be network mounts; a Milvus server that is not up yet
# is retried by the queue, so network-online is not waited for.
After=network.target remote-fs.target
StartLimitIntervalSec=10min
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/bin/env pixgrep daemon
ExecReload=/bin/kill -HUP $MAINPID
# The daemon pings at half this interval from its main loop; a hung loop gets
# the process killed and restarted.
WatchdogSec=60s
# Start-up loads the models and opens the index before READY=1; cold caches
# on a slow disk take minutes.
TimeoutStartSec=5min
# SIGTERM: finish the current batch (daemon.shutdown_timeout, 20 s by default), flush, close.
TimeoutStopSec=90s
# SIGTERM goes to the daemon alone so that it can wind down its OCR workers and
# Milvus Lite itself; whatever is left afterwards is SIGKILLed.
KillMode=mixed
Restart=on-failure
RestartSec=5s
# 78 (EX_CONFIG) is a bad configuration: restarting cannot fix it.
RestartPreventExitStatus=78

# A static system user rather than DynamicUser=: reading the watched folders
# (typically /home/*/Pictures, 0700 homes on Debian) needs a grant that lasts,
# e.g. `setfacl -R -m u:pixgrep:rX ~/Pictures` plus `setfacl -m u:pixgrep:x ~`
# or a shared group, and ACLs and group membership need a UID that is stable
# and never reused, which a dynamic user does not guarantee.
User=pixgrep
Group=pixgrep
StateDirectory=pixgrep
CacheDirectory=pixgrep
# /etc/pixgrep, root's: the daemon only reads its config, `pixgrep watch` (run
# by root) writes it.
ConfigurationDirectory=pixgrep
RuntimeDirectory=pixgrep
RuntimeDirectoryMode=0700
UMask=0077
Environment=PIXGREP_HOME=%S/pixgrep
Environment=XDG_CONFIG_HOME=%E
Environment=XDG_CACHE_HOME=%C/pixgrep
# The API socket lands at /run/pixgrep/api.sock (settings: $XDG_RUNTIME_DIR/pixgrep).
Environment=XDG_RUNTIME_DIR=/run
SyslogIdentifier=pixgrep

# Background-friendly: yield CPU and disk to anything interactive.
Nice=10
CPUSchedulingPolicy=batch
IOSchedulingClass=idle
# Under memory pressure the indexer is the one to go; its queue is durable.
OOMScoreAdjust=500

# Sandbox. State, cache and runtime folders above are writable under
# ProtectSystem=strict by themselves; the watched folders are only read, so
# no ReadWritePaths= is needed.
ProtectSystem=strict
ProtectHome=read-only
PrivateTmp=yes
# Hides /dev/nvidia*. For embed.device/caption.device = cuda, add a drop-in
# (systemctl edit pixgrep) with PrivateDevices=no and, to keep the rest of
# /dev closed, one DeviceAllow= line per GPU node (/dev/nvidiactl rw,
# /dev/nvidia-uvm rw, /dev/nvidia0 rw, ...).
PrivateDevices=yes
NoNewPrivileges=yes
CapabilityBoundingSet=
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
# No ProcSubset=pid: onnxruntime and torch read /proc/cpuinfo and /proc/meminfo.
# AF_INET/AF_INET6 only for a remote Milvus (milvus.uri = http://...).
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# IP traffic to and from loopback only. The daemon listens on Unix sockets alone
# (its API and embedded Milvus Lite); for a Milvus server on another host, allow
# its address in a drop-in (systemctl edit pixgrep): IPAddressAllow=192.0.2.10
IPAddressDeny=any
IPAddressAllow=localhost
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RemoveIPC=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# No MemoryDenyWriteExecute=: onnxruntime, numpy and Milvus Lite run without
# W+X memory, but torch's oneDNN JIT-compiles its CPU kernels (conv2d fails with
# "could not create a primitive"), and the ml extra's backends run on torch.

[Install]
WantedBy=multi-user.target
"""

USER_UNIT = """\
# pixgrep user service (systemctl --user): indexes the folders in
# ~/.config/pixgrep/config.toml into ~/.local/state/pixgrep, the same index the
# pixgrep CLI uses. `pixgrep service install --user` writes this to
# ~/.config/systemd/user/pixgrep.service with ExecStart pointing at the
# installed pixgrep; `loginctl enable-linger` keeps it running without a login.
[Unit]
Description=pixgrep image indexer (grep for pictures)
Documentation=https://github.com/pixgrep/pixgrep#readme
StartLimitIntervalSec=10min
StartLimitBurst=5

[Service]
Type=notify
NotifyAccess=main
# Made outside the sandbox (+), which mounts the home read-only: the sandbox
# can only open up folders that exist. StateDirectory= is not used because it
# means ~/.config on systemd < 254 and ~/.local/state after, while the CLI's
# index is at $XDG_STATE_HOME/pixgrep whatever the version.
ExecStartPre=+/bin/mkdir -p %h/.local/state/pixgrep
ExecStart=/usr/bin/env pixgrep daemon
ExecReload=/bin/kill -HUP $MAINPID
WatchdogSec=60s
TimeoutStartSec=5min
TimeoutStopSec=90s
KillMode=mixed
Restart=on-failure
RestartSec=5s
RestartPreventExitStatus=78

CacheDirectory=pixgrep
RuntimeDirectory=pixgrep
RuntimeDirectoryMode=0700
UMask=0077
# Matches the CLI's default ($XDG_STATE_HOME/pixgrep); with XDG_STATE_HOME set
# elsewhere, set it for the manager too (~/.config/environment.d/) and edit this.
Environment=PIXGREP_HOME=%h/.local/state/pixgrep
# Libraries' scratch files (onnxruntime's among them) go where the daemon may
# write; Hugging Face models stay in the cache the CLI uses.
Environment=XDG_CACHE_HOME=%C/pixgrep
Environment=HF_HOME=%C/huggingface

Nice=10
CPUSchedulingPolicy=batch
IOSchedulingClass=idle
OOMScoreAdjust=500

# systemd 252 can only build the mount namespace of a user service inside a
# user namespace of its own; without PrivateUsers= the options below that
# need one are silently skipped.
PrivateUsers=yes
ProtectSystem=strict
ProtectHome=read-only
# The index, and model downloads when the cache exists. The config
# (~/.config/pixgrep) is only read: `pixgrep watch` writes it.
ReadWritePaths=%h/.local/state/pixgrep -%C/huggingface
PrivateTmp=yes
# Hides /dev/nvidia*; for CUDA set PrivateDevices=no in a drop-in (systemctl --user edit pixgrep).
PrivateDevices=yes
NoNewPrivileges=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
# No ProtectKernelLogs=: an unprivileged user cannot read the kernel log anyway
# (/proc/kmsg is root's, Debian sets kernel.dmesg_restrict=1), and under
# systemd-nspawn, where /proc/kmsg is a FIFO, a user manager fails to mask it
# (226/NAMESPACE).
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# IP traffic to and from loopback only (a remote Milvus: allow its address in a
# drop-in, systemctl --user edit pixgrep) where the manager can attach BPF
# programs. A user manager cannot: systemd runs this unit without the filter
# and logs "unit configures an IP firewall, but not running as root" (checked
# by tests/test_systemd_nspawn.py). What protects the daemon is that it has no
# listener another user can use: Unix sockets in 0700 folders, and a token on
# the gallery's loopback port.
IPAddressDeny=any
IPAddressAllow=localhost
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
# No MemoryDenyWriteExecute=: torch's oneDNN JIT needs W+X memory (see the system unit).

[Install]
WantedBy=default.target
"""

SYSUSERS = """\
# The pixgrep system service's user (sysusers.d(5)); read by systemd-sysusers.
u pixgrep - "pixgrep image indexer" /var/lib/pixgrep
"""

SYSTEM_CONFIG_DIR = Path("/etc/pixgrep")
# Created 0644 so that the pixgrep user can read it: `pixgrep watch` keeps the
# mode of an existing file but would create a new one 0600, root's alone.
SYSTEM_CONFIG = """\
# pixgrep system service settings (see `pixgrep config` for every key).
# Add folders with: sudo XDG_CONFIG_HOME=/etc XDG_RUNTIME_DIR=/run pixgrep watch DIR
# (a running service starts watching at once); after editing by hand: systemctl reload pixgrep
"""

# Repository file name -> text; see the module docstring.
SHIPPED_FILES = {
    "pixgrep.service": SYSTEM_UNIT,
    "pixgrep-user.service": USER_UNIT,
    "pixgrep.sysusers.conf": SYSUSERS,
}


class InstallError(Exception):
    """Installing or removing the unit failed; the message is for the user."""


# Rendering -------------------------------------------------------------------
def pixgrep_command() -> list[str]:
    """The command that runs this installation's ``pixgrep``, as absolute paths.

    The console script next to the running interpreter when there is one (a
    venv's bin/), else the interpreter with ``-m pixgrep_cli.main``. Symlinks
    are kept: a venv's python is a link, and resolving it would leave the venv.
    """
    python = Path(sys.executable if os.path.isabs(sys.executable) else os.path.abspath(sys.executable))
    script = python.parent / "pixgrep"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    found = shutil.which("pixgrep")
    if found and _same_python(Path(found), python):
        return [os.path.abspath(found)]
    return [str(python), "-m", "pixgrep_cli.main"]


def _same_python(script: Path, python: Path) -> bool:
    try:
        first = script.read_bytes()[:512].split(b"\n", 1)[0]
    except OSError:
        return False
    return first.startswith(b"#!") and first[2:].strip().split(b" ")[0] == str(python).encode()


def quote_exec(argv: Sequence[str]) -> str:
    """Quote a command line for ExecStart= (systemd.service(5) "Command lines")."""
    out = []
    for arg in argv:
        # % starts a specifier and $ an environment variable in unit files.
        a = arg.replace("%", "%%").replace("$", "$$")
        if not a or any(c in a for c in " \t\n\"'\\;"):
            a = '"' + a.replace("\\", "\\\\").replace('"', '\\"') + '"'
        out.append(a)
    return " ".join(out)


def template(scope: Scope) -> str:
    return SYSTEM_UNIT if scope == "system" else USER_UNIT


def render(scope: Scope, command: Sequence[str] | None = None) -> str:
    """The unit text for ``scope`` with ExecStart running ``command`` (default: this pixgrep)."""
    argv = [*(command if command is not None else pixgrep_command()), "daemon"]
    line = f"ExecStart={TEMPLATE_EXEC_START}"
    text = template(scope)
    if text.count(line + "\n") != 1:
        raise AssertionError(f"the {scope} unit template has no single {line!r} line")
    return text.replace(line + "\n", f"ExecStart={quote_exec(argv)}\n")


# Installing --------------------------------------------------------------------
def default_unit_dir(scope: Scope) -> Path:
    if scope == "system":
        return SYSTEM_UNIT_DIR
    xdg = os.environ.get("XDG_CONFIG_HOME")
    return (Path(xdg) if xdg else Path.home() / ".config") / "systemd" / "user"


Runner = Callable[[list[str]], "subprocess.CompletedProcess[str]"]


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


@dataclass
class InstallReport:
    unit_path: Path
    written: list[Path] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)


def _systemctl(scope: Scope) -> list[str]:
    return ["systemctl", "--user"] if scope == "user" else ["systemctl"]


def _check(runner: Runner | None, argv: list[str], report: InstallReport) -> None:
    report.commands.append(argv)
    try:
        res = (runner or _run)(argv)
    except FileNotFoundError as e:
        raise InstallError(f"{argv[0]} not found: is this a systemd system? ({e})") from None
    if res.returncode != 0:
        detail = (res.stderr or res.stdout or "").strip().splitlines()
        raise InstallError(f"`{shlex.join(argv)}` failed: {detail[-1] if detail else f'exit {res.returncode}'}")


def _write(path: Path, text: str, report: InstallReport) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        tmp.chmod(0o644)
        tmp.replace(path)
    except PermissionError:
        raise InstallError(f"cannot write {path}: permission denied (run as root, or use --user)") from None
    except OSError as e:
        raise InstallError(f"cannot write {path}: {e.strerror or e}") from None
    report.written.append(path)


def install(
    scope: Scope,
    *,
    unit_dir: Path | None = None,
    command: Sequence[str] | None = None,
    enable: bool = True,
    start: bool = True,
    runner: Runner | None = None,
) -> InstallReport:
    """Write the unit for ``scope``; with ``enable``, reload systemd and enable (and ``start``) it.

    For the system scope with ``enable``, also writes the sysusers.d entry and
    runs systemd-sysusers, since the unit's User= must exist before it starts,
    and creates /etc/pixgrep/config.toml readable by that user if it is missing.
    Without ``enable`` only the unit file is written and nothing is run. Re-running
    replaces the unit and, with ``start``, restarts the service onto it.
    """
    target_dir = unit_dir if unit_dir is not None else default_unit_dir(scope)
    report = InstallReport(unit_path=target_dir / UNIT_NAME)
    # What this run may create, and did not exist before it. Only the system scope writes the
    # sysusers entry and /etc/pixgrep; a user may not even be allowed to stat those.
    candidates = [report.unit_path]
    if scope == "system":
        candidates += [SYSUSERS_DIR / SYSUSERS_NAME, SYSTEM_CONFIG_DIR / "config.toml"]
    fresh = [p for p in candidates if not _exists(p)]
    try:
        return _install(
            scope, report, command=command, enable=enable, start=start, runner=runner, by_name=unit_dir is None
        )
    except InstallError as e:
        # No half-installed unit (a machine without a user bus failed at daemon-reload after the unit was
        # written): remove what this run created, and say what to do instead (issue 9, defect 9).
        for path in report.written:
            if path in fresh:
                path.unlink(missing_ok=True)
        kept = [str(p) for p in report.written if p not in fresh]
        undo = f"kept the earlier {', '.join(kept)}" if kept else "nothing was installed"
        raise InstallError(
            f"{e}; {undo}. Without a service manager, run the daemon in the foreground: pixgrep daemon"
        ) from None


def _exists(path: Path) -> bool:
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # there, but not ours to look at: never ours to remove
    return True


def _install(
    scope: Scope,
    report: InstallReport,
    *,
    command: Sequence[str] | None,
    enable: bool,
    start: bool,
    runner: Runner | None,
    by_name: bool,
) -> InstallReport:
    argv = list(command) if command is not None else pixgrep_command()
    _write(report.unit_path, render(scope, argv), report)
    if scope == "system":
        for blocked in unreachable(argv):
            report.hints.append(
                f"warning: other users cannot reach {blocked}, so the pixgrep user cannot run {argv[0]}; "
                "install pixgrep outside home folders (e.g. a venv in /opt) or grant it access"
            )
    if scope == "user":
        report.hints.append(f"to keep it running when you are logged out: loginctl enable-linger {_username()}")
    if not enable:
        if scope == "system":
            report.hints.append(
                f"create its user first: systemd-sysusers {SYSUSERS_DIR / SYSUSERS_NAME} (contents: "
                f"{SYSUSERS.splitlines()[-1]})"
            )
        return report
    if scope == "system":
        sysusers = SYSUSERS_DIR / SYSUSERS_NAME
        _write(sysusers, SYSUSERS, report)
        _check(runner, ["systemd-sysusers", str(sysusers)], report)
        config = SYSTEM_CONFIG_DIR / "config.toml"
        if not config.exists():
            _write(config, SYSTEM_CONFIG, report)
    systemctl = _systemctl(scope)
    _check(runner, [*systemctl, "daemon-reload"], report)
    # By path when the folder is not one systemd searches: enable links it in first.
    _check(runner, [*systemctl, "enable", UNIT_NAME if by_name else str(report.unit_path)], report)
    if start:
        # restart, not start: a re-install must also swap a running daemon onto the new unit.
        _check(runner, [*systemctl, "restart", UNIT_NAME], report)
    return report


def uninstall(scope: Scope, *, unit_dir: Path | None = None, runner: Runner | None = None) -> InstallReport:
    """Stop and disable the unit and remove its file; the index and the pixgrep user are kept."""
    target_dir = unit_dir if unit_dir is not None else default_unit_dir(scope)
    report = InstallReport(unit_path=target_dir / UNIT_NAME)
    systemctl = _systemctl(scope)
    if report.unit_path.exists():
        _check(runner, [*systemctl, "disable", "--now", UNIT_NAME], report)
        try:
            report.unit_path.unlink()
        except OSError as e:
            raise InstallError(f"cannot remove {report.unit_path}: {e.strerror or e}") from None
        _check(runner, [*systemctl, "daemon-reload"], report)
    return report


def unreachable(argv: Sequence[str]) -> list[Path]:
    """Folders on the way to the command's program and interpreter that others cannot enter.

    Only the mode bits are read: an ACL or a group may still let the service user in.
    """
    targets = [Path(argv[0])]
    try:
        first = Path(argv[0]).read_bytes()[:512].split(b"\n", 1)[0]
        if first.startswith(b"#!") and first[2:].strip():
            targets.append(Path(first[2:].strip().split(b" ")[0].decode()))
    except (OSError, UnicodeDecodeError):
        pass
    blocked: list[Path] = []
    for target in targets:
        for p in (target, Path(os.path.realpath(target))):
            for parent in reversed(p.parents):
                try:
                    ok = parent.stat().st_mode & stat.S_IXOTH
                except OSError:
                    continue
                if not ok and parent not in blocked:
                    blocked.append(parent)
    return blocked


def _username() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def write_shipped(directory: Path) -> list[Path]:
    """Write the repository copies (systemd/*.service and the sysusers entry) into ``directory``."""
    out = []
    for name, text in SHIPPED_FILES.items():
        path = directory / name
        path.write_text(text)
        out.append(path)
    return out


if __name__ == "__main__":
    for p in write_shipped(Path(sys.argv[1] if len(sys.argv) > 1 else "systemd")):
        print(p)
