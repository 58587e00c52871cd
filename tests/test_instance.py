"""One daemon per index and per socket (issue 9, defect 3)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import wait_for
from pixgrep.errors import AlreadyRunning
from pixgrep.service.api import ApiServer
from pixgrep.service.instance import InstanceLock, running_pid
from pixgrep.settings import ExitCode
from test_fuzz import RecordingBackend  # the Backend Protocol's recording double


def test_a_second_lock_on_the_same_home_names_the_holder(tmp_path: Path) -> None:
    with InstanceLock(tmp_path / "home"):
        assert running_pid(tmp_path / "home") == os.getpid()
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}") as e:
            InstanceLock(tmp_path / "home").acquire()
        assert e.value.pid == os.getpid()
    assert running_pid(tmp_path / "home") is None
    InstanceLock(tmp_path / "home").acquire()  # free again; the (empty) pidfile stays


def test_a_pidfile_left_by_a_killed_daemon_does_not_block(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "daemon.pid").write_text("999999\n")  # nobody holds its flock
    assert running_pid(home) is None
    lock = InstanceLock(home)
    lock.acquire()
    assert (home / "daemon.pid").read_text().strip() == str(os.getpid())
    lock.release()


def test_run_daemon_on_a_held_index_exits_75_before_opening_anything(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from pixgrep.service.supervisor import run_daemon
    from pixgrep.settings import load_settings

    settings = load_settings()
    with InstanceLock(settings.home), caplog.at_level("INFO"):
        assert run_daemon(settings) == ExitCode.TEMPFAIL
    assert [r.getMessage() for r in caplog.records] == [
        f"another pixgrep daemon (pid {os.getpid()}) is already running on {settings.home}"
    ]
    assert not settings.socket_path.exists() and not (home / "pixgrep.sqlite").exists()


def test_run_daemon_on_a_socket_another_daemon_answers_exits_75_in_one_line(
    home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Another index's daemon on the same socket: refused before the index is opened, its socket left alone."""
    from pixgrep.service.supervisor import run_daemon
    from pixgrep.settings import load_settings

    settings = load_settings()
    settings.socket_path.parent.mkdir(mode=0o700, parents=True)
    first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    first.bind(str(settings.socket_path))
    first.listen(1)
    try:
        with caplog.at_level("INFO"):
            assert run_daemon(settings) == ExitCode.TEMPFAIL
    finally:
        first.close()
    assert [r.getMessage() for r in caplog.records] == [
        f"another pixgrep daemon (pid {os.getpid()}) is already listening on {settings.socket_path}"
    ]
    assert settings.socket_path.exists() and not (home / "pixgrep.sqlite").exists()


def test_a_socket_another_process_answers_on_is_left_alone(tmp_path: Path) -> None:
    """The second daemon used to print 'already listening', then delete the first one's socket on exit."""
    path = tmp_path / "run" / "api.sock"
    path.parent.mkdir(mode=0o700)
    first = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    first.bind(str(path))
    first.listen(1)
    try:
        backend = RecordingBackend()
        api = ApiServer(backend, path)
        with pytest.raises(AlreadyRunning, match=f"pid {os.getpid()}"):
            api.start()
        api.stop()
        assert path.exists() and backend.calls == []
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.connect(str(path))
        probe.close()
    finally:
        first.close()


@pytest.mark.slow
def test_a_second_daemon_exits_75_and_leaves_the_first_alone(tmp_path: Path, home: Path) -> None:
    from test_daemon import DaemonProc

    env = dict(os.environ, PIXGREP_OCR__WORKERS="1")
    first = DaemonProc(env, tmp_path / "first.log")
    first.start()
    try:
        assert first.proc is not None
        pid = first.proc.pid
        other_run = tmp_path / "run2"
        other_run.mkdir(mode=0o700)
        for name, extra in (("same runtime dir", {}), ("other runtime dir", {"XDG_RUNTIME_DIR": str(other_run)})):
            r = subprocess.run(
                [sys.executable, "-m", "pixgrep_cli.main", "daemon"],
                env={**env, **extra},
                capture_output=True,
                text=True,
                timeout=120,  # it used to retry the Milvus lock forever with another runtime dir
            )
            lines = r.stderr.strip().splitlines()
            assert r.returncode == ExitCode.TEMPFAIL, (name, r.stderr)
            assert len(lines) == 1 and f"pid {pid}" in lines[0], (name, r.stderr)
        assert first.api("GET", "/v1/health")["state"] == "running"
        wait_for(lambda: first.socket.exists(), 5, "the first daemon's socket")
    finally:
        first.kill()
