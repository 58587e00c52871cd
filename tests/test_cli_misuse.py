"""CLI misuse as a new user would try it (issue 9, defect 9): one line on stderr and a named exit code."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from pixgrep.settings import ConfigError, ExitCode, load_settings

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("section", "key"), [("embed", "backend"), ("ocr", "engine"), ("caption", "backend")])
def test_an_unknown_backend_is_a_config_error_at_load(home: Path, section: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"invalid setting {section}\.{key} .*unknown {section} backend 'openai'"):
        load_settings(**{section: {key: "openai"}})


@pytest.mark.parametrize(
    ("name", "ok"), [("out.jpg", True), ("a/b.PNG", True), ("x.webp", True), ("out.txt", False), ("noext", False)]
)
def test_a_montage_must_be_an_image_file(tmp_path: Path, name: str, ok: bool) -> None:
    from pixgrep.montage import output_problem

    problem = output_problem(tmp_path / name)
    assert (problem is None) == ok, problem
    if not ok:
        assert problem is not None and "\n" not in problem and "image type" in problem


def test_install_script_waits_for_the_dpkg_lock() -> None:
    text = (REPO / "scripts" / "install.sh").read_text()
    calls = [line for line in text.splitlines() if re.search(r"\bapt-get\s", line) and "command -v" not in line]
    assert calls, "no apt-get call found"
    assert all('"${apt_wait[@]}"' in line for line in calls), calls
    assert "apt_wait=(-o DPkg::Lock::Timeout=600)" in text


def test_an_empty_file_is_not_queued_again_by_the_rescan(home: Path, tmp_path: Path) -> None:
    """empty.png was queued on every daemon start: its path error booked no stat, so it never looked settled."""
    from pixgrep import scan
    from pixgrep.app import Index
    from pixgrep.service.queue import WorkQueue
    from pixgrep.service.reconcile import reconcile

    pics = tmp_path / "pics"
    pics.mkdir()
    (pics / "empty.png").write_bytes(b"")
    settings = load_settings()
    with Index(settings, ocr_workers=0) as index:
        [out] = index.pipeline.process([str(pics / "empty.png")])
        assert (out.status, out.error) == ("failed", "empty file (0 bytes)")
        queue = WorkQueue(index.db)
        report = reconcile(index.db, queue, str(pics), scan.FileFilter.from_settings(settings))
        assert (report.queued, report.unchanged) == (0, 1)
        # Its bytes change: then it is tried again.
        Image.new("RGB", (8, 8)).save(pics / "empty.png")
        report = reconcile(index.db, queue, str(pics), scan.FileFilter.from_settings(settings))
        assert report.queued == 1


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pixgrep_cli.main", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env if env is not None else dict(os.environ),
    )


@pytest.mark.slow
@pytest.mark.parametrize("args", [["index", "."], ["search", "cat"], ["status"], ["daemon"]])
def test_an_unknown_embed_backend_prints_one_line_and_exits_78(home: Path, args: list[str]) -> None:
    r = _cli(*args, env=dict(os.environ, PIXGREP_EMBED__BACKEND="openai"))
    assert r.returncode == ExitCode.CONFIG, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "embed.backend" in lines[0] and "'openai'" in lines[0], r.stderr


@pytest.mark.slow
def test_indexing_a_path_that_does_not_exist_fails_before_anything_is_sent(home: Path, tmp_path: Path) -> None:
    """With a 'daemon' listening too: it used to answer 'queued 1 files' and exit 0."""
    sock_path = Path(os.environ["XDG_RUNTIME_DIR"]) / "pixgrep" / "api.sock"
    sock_path.parent.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    listener.listen(8)
    listener.setblocking(False)
    try:
        r = _cli("index", str(tmp_path / "no" / "such" / "path"))
        with pytest.raises(BlockingIOError):
            listener.accept()[0].close()
    finally:
        listener.close()
    assert r.returncode == ExitCode.NOINPUT
    assert r.stderr.strip().splitlines() == [f"pixgrep: {tmp_path / 'no' / 'such' / 'path'}: no such file or folder"]


@pytest.mark.slow
def test_a_montage_that_is_not_an_image_is_refused_in_one_line(home: Path, tmp_path: Path) -> None:
    r = _cli("search", "--montage", str(tmp_path / "out.txt"), "cat")
    assert r.returncode == ExitCode.USAGE
    assert len(r.stderr.strip().splitlines()) == 1 and "image type" in r.stderr, r.stderr


@pytest.mark.slow
def test_index_with_milvus_down_from_the_start_says_so_briefly_and_exits_69(home: Path, tmp_path: Path) -> None:
    from conftest import copy_corpus, corpus_files

    pics = tmp_path / "pics"
    copy_corpus(pics, corpus_files(3, stride=211))
    env = dict(os.environ, PIXGREP_MILVUS__URI="http://127.0.0.1:1", PIXGREP_MILVUS__TIMEOUT="2")
    r = _cli("index", str(pics), env=env)
    assert r.returncode == ExitCode.UNAVAILABLE, r.stdout + r.stderr
    assert "3 files: 0 indexed" in r.stdout
    assert "Traceback" not in r.stderr and len(r.stderr) < 2000, r.stderr
    assert "3 files wait for the vector store" in r.stderr


def _attempts(home: Path, path: Path) -> int:
    import sqlite3

    with sqlite3.connect(f"file:{home / 'pixgrep.sqlite'}?mode=ro", uri=True, timeout=30) as c:
        row = c.execute("SELECT attempts FROM paths WHERE path = ?", (os.fsencode(str(path)),)).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_the_daemon_lists_a_failure_once_refuses_a_missing_path_and_leaves_an_empty_file_alone(
    home: Path, tmp_path: Path
) -> None:
    from conftest import copy_corpus, corpus_files, wait_for
    from test_daemon import DaemonProc, cli

    env = dict(os.environ, PIXGREP_OCR__WORKERS="1", PIXGREP_WATCH__STABLE_SECONDS="0.3")
    pics = tmp_path / "pics"
    copy_corpus(pics, corpus_files(1, stride=307))
    (pics / "empty.png").write_bytes(b"")
    cli(env, "watch", str(pics))
    for run in range(2):
        d = DaemonProc(env, tmp_path / f"daemon{run}.log")
        d.start()
        try:
            wait_for(lambda d=d: d.api("GET", "/v1/status")["counts"]["indexed"] == 1, 120, "the good image")
            wait_for(lambda: _attempts(home, pics / "empty.png") >= 1, 60, "the empty file's failure")
            failures = d.api("GET", "/v1/status?failed=1")["failures"]
            assert [f["path"] for f in failures] == [str(pics / "empty.png")], failures
            r = cli(env, "status", "--failed")
            assert r.stdout.count("empty.png") == 1, r.stdout
            # The API itself refuses a path that neither exists nor was ever indexed.
            body = {"paths": [str(tmp_path / "nope")], "force": False}
            assert "no such file or folder" in d.api("POST", "/v1/index", json=body)["error"]
            wait_for(lambda d=d: d.api("GET", "/v1/status")["counts"]["queue_pending"] == 0, 60, "an idle queue")
        finally:
            d.kill()
    # The second start's rescan did not queue the unchanged empty file again.
    assert _attempts(home, pics / "empty.png") == 1


# Runs `pixgrep index` with the Milvus server SIGKILLed just before the second batch's upsert.
_MID_RUN = r"""
import os, signal, sys
from pixgrep.store import MilvusStore
real, calls, server_pid = MilvusStore.upsert_many, [], int(sys.argv[1])
def flaky(self, items):
    calls.append(1)
    if len(calls) == 2:
        os.kill(server_pid, signal.SIGKILL)
    return real(self, items)
MilvusStore.upsert_many = flaky
sys.argv = ["pixgrep", "index", sys.argv[2]]
from pixgrep_cli.main import run
run()
"""


@pytest.mark.slow
def test_a_milvus_failure_mid_run_prints_a_summary_not_tracebacks(home: Path, tmp_path: Path) -> None:
    from conftest import copy_corpus, corpus_files
    from faultkit import MilvusServer

    pics = tmp_path / "pics"
    copy_corpus(pics, corpus_files(4, stride=89))
    server = MilvusServer(tmp_path / "milvus")
    server.start()
    try:
        assert server.proc is not None
        env = dict(
            os.environ,
            PIXGREP_MILVUS__URI=server.uri,
            PIXGREP_MILVUS__TIMEOUT="3",
            PIXGREP_PIPELINE__BATCH_SIZE="2",
            PIXGREP_OCR__WORKERS="1",
        )
        r = subprocess.run(
            [sys.executable, "-c", _MID_RUN, str(server.proc.pid), str(pics)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    finally:
        server.stop(hard=True)
    assert r.returncode == ExitCode.UNAVAILABLE, r.stdout + r.stderr[-3000:]
    assert "Traceback" not in r.stderr and len(r.stderr) < 3000, r.stderr[-3000:]
    assert "4 files: 2 indexed" in r.stdout, r.stdout + r.stderr
    assert "2 files wait for the vector store" in r.stderr
