"""``search.start_daemon``: a search that finds no daemon starts one in the background and says so."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import copy_corpus, corpus_files, wait_for
from pixgrep.request import SearchRequest
from pixgrep.settings import load_settings
from pixgrep_cli import commands, ondemand


class Spawned:
    """Records what ``subprocess.Popen`` would have been asked."""

    pid = 4242

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], dict[str, Any]]] = []

    def __call__(self, argv: list[str], **kw: Any) -> Spawned:
        self.calls.append((argv, kw))
        return self


def test_the_daemon_is_started_detached_with_this_searchs_home_and_config(home: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "my.toml"
    cfg.write_text("[search]\nstart_daemon = true\n")
    settings = load_settings(cfg)
    spawn = Spawned()
    line = ondemand.start_daemon(settings, spawn=spawn)
    ((argv, kw),) = spawn.calls
    assert argv[-3:] == ["-m", "pixgrep_cli.main", "daemon"]
    assert kw["start_new_session"] and kw["stdin"] == subprocess.DEVNULL
    assert kw["env"]["PIXGREP_HOME"] == str(home) and kw["env"]["PIXGREP_CONFIG_FILE"] == str(cfg)
    log = home / ondemand.LOG_NAME
    assert kw["stdout"] is kw["stderr"] and stat.S_IMODE(log.stat().st_mode) == 0o600
    assert "pid 4242" in line and str(log) in line


def test_a_daemon_that_cannot_start_is_one_line(home: Path) -> None:
    def refuse(argv: list[str], **kw: Any) -> Any:
        raise PermissionError("not allowed")

    line = ondemand.start_daemon(load_settings(), spawn=refuse)
    assert line.startswith("could not start a daemon") and "not allowed" in line


class Backend:
    def __init__(self, live: bool, fail: bool = False) -> None:
        self.live, self.fail = live, fail

    def search(self, request: SearchRequest) -> list[dict[str, Any]]:
        if self.fail:
            raise ValueError("a refused query")
        return []

    def close(self) -> None:
        pass


@pytest.mark.parametrize(
    ("enabled", "live", "fail", "started"),
    [
        (False, False, False, False),  # off: the default
        (True, False, False, True),  # on, no daemon answered: start one
        (True, True, False, False),  # a daemon answered
        (True, False, True, False),  # the search failed: say that, start nothing
    ],
)
def test_a_search_starts_a_daemon_only_when_asked_and_none_answered(
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    enabled: bool,
    live: bool,
    fail: bool,
    started: bool,
) -> None:
    settings = load_settings(search={"start_daemon": enabled})
    monkeypatch.setattr(commands, "open_backend", lambda s, announce: Backend(live, fail))
    calls: list[object] = []
    monkeypatch.setattr(ondemand, "start_daemon", lambda s: calls.append(s) or "started a daemon (test)")
    out = commands._search(settings, SearchRequest(query="x"), quiet=True)
    assert (out == []) != fail
    assert len(calls) == int(started)
    assert ("started a daemon (test)" in capsys.readouterr().err) == started


@pytest.mark.slow
def test_the_second_search_goes_through_the_daemon_the_first_one_started(home: Path, tmp_path: Path) -> None:
    env = dict(os.environ, PIXGREP_OCR__WORKERS="1", PIXGREP_SEARCH__START_DAEMON="true")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pixgrep_cli.main", *args], env=env, capture_output=True, text=True, timeout=300
        )

    pics = copy_corpus(tmp_path / "pics", corpus_files(1))
    assert cli("index", str(pics[0].parent)).returncode == 0
    first = cli("search", "--all", "小朋友")
    assert first.returncode in (0, 1), first.stderr
    m = re.search(r"started a daemon in the background \(pid (\d+), log (\S+)\);", first.stderr)
    assert m, first.stderr
    pid = int(m.group(1))
    try:
        sock = Path(env["XDG_RUNTIME_DIR"]) / "pixgrep" / "api.sock"

        def answers() -> bool:
            from pixgrep_cli.remote import RemoteBackend

            remote = RemoteBackend.connect(sock)
            return remote is not None and remote.health().get("state") == "running"

        wait_for(answers, 180, f"the started daemon to answer (log: {Path(m.group(2)).read_text()[-2000:]})")
        second = cli("search", "--all", "小朋友")
        assert "no daemon running" not in second.stderr and "started a daemon" not in second.stderr
        assert second.stdout == first.stdout, second.stderr  # the same index, through the daemon this time
    finally:
        _stop(pid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"  # not our child: init reaps it
    except OSError:
        return False


def _stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
