"""The shipped units: systemd-analyze verify, rendering and `pixgrep service install`."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from pixgrep_cli import units
from pixgrep_cli.main import main

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "systemd"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def verify(unit: Path, scope: units.Scope, tmp_path: Path) -> str:
    """systemd-analyze verify's whole output: systemd reports most unit problems as warnings, exit 0."""
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    # A user manager cannot even be simulated without XDG_RUNTIME_DIR.
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": str(tmp_path),
        "XDG_RUNTIME_DIR": str(runtime),
        "LANG": "C.UTF-8",
        "SYSTEMD_LOG_COLOR": "0",
    }
    argv = ["systemd-analyze", *(["--user"] if scope == "user" else []), "verify", str(unit)]
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    return (res.stdout + res.stderr).strip() + ("" if res.returncode == 0 else f"\n(exit {res.returncode})")


# The shipped files --------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(units.SHIPPED_FILES))
def test_shipped_files_match_units_module(name: str) -> None:
    path = SHIPPED / name
    assert path.read_text() == units.SHIPPED_FILES[name], (
        f"{path} differs from pixgrep_cli.units; edit units.py and run `python -m pixgrep_cli.units systemd`"
    )


@needs_analyze
@pytest.mark.parametrize(("name", "scope"), [("pixgrep.service", "system"), ("pixgrep-user.service", "user")])
def test_shipped_unit_verifies_silently(name: str, scope: units.Scope, tmp_path: Path) -> None:
    assert verify(SHIPPED / name, scope, tmp_path) == ""


@needs_analyze
@pytest.mark.parametrize("scope", ["system", "user"])
def test_installed_unit_verifies_silently(scope: units.Scope, tmp_path: Path) -> None:
    report = units.install(scope, unit_dir=tmp_path / "units", enable=False)
    assert report.written == [tmp_path / "units" / "pixgrep.service"]
    text = report.unit_path.read_text()
    exec_start = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert exec_start == [f"ExecStart={units.quote_exec(units.pixgrep_command())} daemon"]
    assert verify(report.unit_path, scope, tmp_path) == ""


@needs_analyze
def test_verify_does_report_problems(tmp_path: Path) -> None:
    # Guards the tests above: a broken unit must make verify say something.
    bad = tmp_path / "pixgrep.service"
    bad.write_text(units.SYSTEM_UNIT.replace("ProtectHome=read-only", "ProtectHome=sometimes"))
    assert "protect home value" in verify(bad, "system", tmp_path)
    missing = tmp_path / "missing" / "pixgrep.service"
    missing.parent.mkdir()
    missing.write_text(units.render("system", ["/nonexistent/pixgrep"]))
    assert "/nonexistent/pixgrep" in verify(missing, "system", tmp_path)


@needs_analyze
def test_system_unit_exposure(tmp_path: Path) -> None:
    res = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(SHIPPED / "pixgrep.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    m = re.search(r"Overall exposure level for pixgrep\.service: ([\d.]+)", res.stdout)
    assert m, res.stdout + res.stderr
    assert float(m.group(1)) <= 2.0, res.stdout


@pytest.mark.parametrize("unit", [units.SYSTEM_UNIT, units.USER_UNIT])
def test_unit_settings(unit: str) -> None:
    settings = [line for line in unit.splitlines() if line and not line.startswith(("#", "["))]
    keys = [line.split("=", 1)[0] for line in settings]
    for key, value in [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Restart", "on-failure"),
        ("RestartPreventExitStatus", "78"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "read-only"),
        ("NoNewPrivileges", "yes"),
        ("Nice", "10"),
        ("IOSchedulingClass", "idle"),
        ("CPUSchedulingPolicy", "batch"),
        ("RuntimeDirectory", "pixgrep"),
        ("RuntimeDirectoryMode", "0700"),
        ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        # issue 9: no IP peer but loopback, even if something opened a TCP port
        ("IPAddressDeny", "any"),
        ("IPAddressAllow", "localhost"),
        ("UMask", "0077"),
    ]:
        assert f"{key}={value}" in settings, key
    assert "MemoryDenyWriteExecute" not in keys  # torch's oneDNN JIT needs W+X pages
    once = [k for k in keys if k not in ("Environment", "ExecStartPre")]
    assert len(once) == len(set(once)), "a setting is given twice"
    assert "WatchdogSec" in keys


def test_system_unit_paths() -> None:
    lines = units.SYSTEM_UNIT.splitlines()
    for line in [
        "User=pixgrep",
        "StateDirectory=pixgrep",
        "CacheDirectory=pixgrep",
        "Environment=PIXGREP_HOME=%S/pixgrep",
        "Environment=XDG_RUNTIME_DIR=/run",
        "PrivateDevices=yes",
        "PrivateTmp=yes",
    ]:
        assert line in lines
    assert "DynamicUser=yes" not in lines


def test_user_unit_sandbox_needs_private_users() -> None:
    lines = units.USER_UNIT.splitlines()
    assert "PrivateUsers=yes" in lines
    assert "Environment=PIXGREP_HOME=%h/.local/state/pixgrep" in lines
    # Options that only exist for the system manager would be ignored with a warning.
    for key in ("User=", "ProtectProc=", "ProtectControlGroups=", "RemoveIPC=", "CapabilityBoundingSet="):
        assert not any(line.startswith(key) for line in lines), key


# Rendering ------------------------------------------------------------------------
@pytest.mark.slow
def test_pixgrep_command_is_this_installation() -> None:
    argv = units.pixgrep_command()
    assert Path(argv[0]).is_absolute()
    if len(argv) == 1:
        assert Path(argv[0]).name == "pixgrep"
        assert Path(argv[0]).parent == Path(sys.executable).parent
    else:
        assert argv == [sys.executable, "-m", "pixgrep_cli.main"]
    res = subprocess.run([*argv, "--version"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and "version" in res.stdout, res


@pytest.mark.slow
def test_module_fallback_runs_the_cli() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", "service", "--help"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 0 and "install" in res.stdout, res


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["/usr/bin/pixgrep", "daemon"], "/usr/bin/pixgrep daemon"),
        (["/opt/my apps/bin/pixgrep"], '"/opt/my apps/bin/pixgrep"'),
        (["/opt/100%/pixgrep"], "/opt/100%%/pixgrep"),
        (["/opt/$HOME/pixgrep"], "/opt/$$HOME/pixgrep"),
        (['/opt/a"b\\c'], '"/opt/a\\"b\\\\c"'),
        (["/x", ""], '/x ""'),
    ],
)
def test_quote_exec(argv: list[str], expected: str) -> None:
    assert units.quote_exec(argv) == expected


@needs_analyze
def test_quoted_path_with_space_verifies(tmp_path: Path) -> None:
    exe = tmp_path / "my apps" / "pixgrep"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    unit = tmp_path / "pixgrep.service"
    unit.write_text(units.render("system", [str(exe)]))
    assert verify(unit, "system", tmp_path) == ""


def test_render_replaces_only_exec_start() -> None:
    text = units.render("system", ["/opt/pixgrep/bin/pixgrep"])
    assert text.replace("ExecStart=/opt/pixgrep/bin/pixgrep daemon", f"ExecStart={units.TEMPLATE_EXEC_START}") == (
        units.SYSTEM_UNIT
    )
    user = units.render("user", ["/usr/bin/python3", "-m", "pixgrep_cli.main"])
    assert "\nExecStart=/usr/bin/python3 -m pixgrep_cli.main daemon\n" in user


# Installing ---------------------------------------------------------------------
class FakeSystemctl:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_on = fail_on

    def __call__(self, argv: list[str]) -> subprocess.CompletedProcess[str]:
        self.calls.append(argv)
        if self.fail_on and self.fail_on in argv:
            return subprocess.CompletedProcess(argv, 1, "", "Failed to connect to bus: No medium found\n")
        return subprocess.CompletedProcess(argv, 0, "", "")


def test_install_system_runs_sysusers_reload_enable_restart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(units, "SYSUSERS_DIR", tmp_path / "sysusers.d")
    monkeypatch.setattr(units, "SYSTEM_CONFIG_DIR", tmp_path / "etc")
    fake = FakeSystemctl()
    report = units.install("system", unit_dir=tmp_path / "system", runner=fake)
    sysusers = tmp_path / "sysusers.d" / "pixgrep.conf"
    config = tmp_path / "etc" / "config.toml"
    assert report.written == [tmp_path / "system" / "pixgrep.service", sysusers, config]
    assert sysusers.read_text() == units.SYSUSERS
    # Readable by the pixgrep user; an existing config is left alone.
    assert config.stat().st_mode & 0o777 == 0o644
    config.write_text("[watch]\n")
    units.install("system", unit_dir=tmp_path / "system", runner=FakeSystemctl())
    assert config.read_text() == "[watch]\n"
    assert fake.calls == [
        ["systemd-sysusers", str(sysusers)],
        ["systemctl", "daemon-reload"],
        # --unit-dir may be outside systemd's search path: enabled by path, which links it in.
        ["systemctl", "enable", str(tmp_path / "system" / "pixgrep.service")],
        ["systemctl", "restart", "pixgrep.service"],
    ]
    assert oct(report.unit_path.stat().st_mode & 0o777) == "0o644"


def test_install_user_no_start(tmp_path: Path) -> None:
    fake = FakeSystemctl()
    report = units.install("user", unit_dir=tmp_path, start=False, runner=fake)
    assert fake.calls == [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", str(tmp_path / "pixgrep.service")],
    ]
    assert "PrivateUsers=yes" in report.unit_path.read_text()
    assert any("enable-linger" in h for h in report.hints)


def test_install_reports_systemctl_failure(tmp_path: Path) -> None:
    with pytest.raises(units.InstallError, match="Failed to connect to bus"):
        units.install("user", unit_dir=tmp_path, runner=FakeSystemctl(fail_on="enable"))


@pytest.mark.parametrize("step", ["daemon-reload", "enable", "restart"])
def test_a_failed_install_leaves_no_unit_behind_and_hints_the_foreground_daemon(tmp_path: Path, step: str) -> None:
    """Without a user bus, `pixgrep service install --user` used to leave the unit written but not enabled."""
    with pytest.raises(
        units.InstallError, match=r"nothing was installed\. .*run the daemon in the foreground: pixgrep daemon"
    ):
        units.install("user", unit_dir=tmp_path, runner=FakeSystemctl(fail_on=step))
    assert not (tmp_path / "pixgrep.service").exists()
    # A re-install over a working unit keeps it, and says so.
    units.install("user", unit_dir=tmp_path, runner=FakeSystemctl())
    with pytest.raises(units.InstallError, match="kept the earlier"):
        units.install("user", unit_dir=tmp_path, runner=FakeSystemctl(fail_on=step))
    assert (tmp_path / "pixgrep.service").exists()


def test_install_without_permission(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere")
    target = tmp_path / "ro"
    target.mkdir()
    target.chmod(0o500)
    try:
        with pytest.raises(units.InstallError, match="permission denied"):
            units.install("system", unit_dir=target, enable=False)
    finally:
        target.chmod(0o700)


def test_install_in_default_dir_enables_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    fake = FakeSystemctl()
    report = units.install("user", runner=fake)
    assert report.unit_path == tmp_path / "systemd" / "user" / "pixgrep.service"
    assert ["systemctl", "--user", "enable", "pixgrep.service"] in fake.calls


def test_unreachable_program_is_warned_about(tmp_path: Path) -> None:
    home = tmp_path / "home"
    exe = home / "venv" / "bin" / "pixgrep"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/usr/bin/python3\n")
    exe.chmod(0o755)
    home.chmod(0o700)
    # (pytest's own temporary folders above are 0700 too.)
    assert home in units.unreachable([str(exe)])
    report = units.install("system", unit_dir=tmp_path / "units", command=[str(exe)], enable=False)
    assert any(str(home) in h and h.startswith("warning") for h in report.hints)
    home.chmod(0o755)
    assert home not in units.unreachable([str(exe)])
    assert units.unreachable(["/usr/bin/env"]) == []


def test_default_unit_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert units.default_unit_dir("system") == Path("/etc/systemd/system")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    assert units.default_unit_dir("user") == tmp_path / "cfg" / "systemd" / "user"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert units.default_unit_dir("user") == tmp_path / ".config" / "systemd" / "user"


def test_uninstall(tmp_path: Path) -> None:
    fake = FakeSystemctl()
    units.install("user", unit_dir=tmp_path, enable=False)
    report = units.uninstall("user", unit_dir=tmp_path, runner=fake)
    assert not (tmp_path / "pixgrep.service").exists()
    assert fake.calls == [
        ["systemctl", "--user", "disable", "--now", "pixgrep.service"],
        ["systemctl", "--user", "daemon-reload"],
    ]
    assert units.uninstall("user", unit_dir=tmp_path, runner=fake).commands == []
    assert report.unit_path == tmp_path / "pixgrep.service"


# The CLI ------------------------------------------------------------------------
def test_cli_print() -> None:
    res = CliRunner().invoke(main, ["service", "install", "--print"])
    assert res.exit_code == 0, res.output
    assert res.output == units.render("system")
    res = CliRunner().invoke(main, ["service", "install", "--user", "--print"])
    assert res.output == units.render("user")


def test_cli_install_no_enable(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["service", "install", "--no-enable", "--unit-dir", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "pixgrep.service").read_text() == units.render("system")
    assert f"wrote {tmp_path / 'pixgrep.service'}" in res.output
    assert "systemd-sysusers" in res.output  # tells how to create the user it did not create


def test_cli_install_failure_exit_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A systemctl on PATH that cannot reach the bus: what `pixgrep service install` runs, from the outside.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "systemctl"
    fake.write_text(
        '#!/bin/sh\nfor a in "$@"; do\n  if [ "$a" = daemon-reload ]; then\n'
        '    echo "Failed to connect to bus: No medium found" >&2; exit 1\n  fi\ndone\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    res = CliRunner().invoke(main, ["service", "install", "--user", "--unit-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert "systemctl --user daemon-reload" in res.output and "Failed to connect to bus" in res.output


class _Unstattable(type(Path())):  # type: ignore[misc]
    """A path another user's permissions hide: stat() is refused."""

    def stat(self, **kw: object) -> os.stat_result:
        raise PermissionError(13, "Permission denied", str(self))


def test_a_user_install_never_looks_at_the_system_scopes_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # After a system install, /etc/sysusers.d/pixgrep.conf may exist and be unreadable to the user;
    # a --user install stat()ed it and died with a PermissionError traceback.
    monkeypatch.setattr(units, "SYSUSERS_DIR", _Unstattable(tmp_path / "sysusers.d"))
    monkeypatch.setattr(units, "SYSTEM_CONFIG_DIR", _Unstattable(tmp_path / "etc-pixgrep"))
    report = units.install("user", unit_dir=tmp_path / "units", runner=FakeSystemctl())
    assert report.unit_path.exists()
    with pytest.raises(units.InstallError, match="kept the earlier"):
        units.install("user", unit_dir=tmp_path / "units", runner=FakeSystemctl(fail_on="daemon-reload"))
