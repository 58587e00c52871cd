"""`pixgrep watch DIR --name NAME` with a running daemon (real SQLite, Milvus Lite and OCR): the folder's files are
booked under the name from then on, an indexed folder is rebooked without a second OCR, and the CLI shows this
host's paths. The two-host case is tests/test_fleet.py."""

from __future__ import annotations

import json
import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import tomlkit
from conftest import copy_corpus, corpus_files, wait_for
from test_daemon import DaemonProc, cli

pytestmark = pytest.mark.slow


@pytest.fixture
def daemon(home: Path, tmp_path: Path) -> Iterator[tuple[DaemonProc, dict[str, str]]]:
    import os

    env = dict(os.environ)
    env.update(PIXGREP_OCR__WORKERS="1", PIXGREP_WATCH__STABLE_SECONDS="0.3", PIXGREP_PIPELINE__BATCH_SIZE="2")
    d = DaemonProc(env, tmp_path / "daemon.log")
    yield d, env
    d.kill()


def _booked(home: Path) -> list[tuple[bytes, int]]:
    with sqlite3.connect(home / "pixgrep.sqlite") as conn:
        return conn.execute(
            "SELECT p.path, c.attempts FROM paths p JOIN contents c ON c.hash = p.content_hash ORDER BY p.path"
        ).fetchall()


def _search(env: dict[str, str], query: str) -> list[str]:
    out = cli(env, "search", "--json", "--mode", "keyword", query, check=False).stdout
    return [json.loads(line)["path"] for line in out.splitlines() if line.strip()]


def test_naming_a_watched_folder_rebooks_it_and_new_files_come_by_name(
    daemon: tuple[DaemonProc, dict[str, str]], home: Path, tmp_path: Path
) -> None:
    d, env = daemon
    pics = tmp_path / "pics"
    bus, other = corpus_files(2)  # the first one's OCR text starts "好的，各位小朋友！"
    [first] = copy_corpus(pics, [bus])
    d.start()
    cli(env, "watch", str(pics))
    wait_for(lambda: _search(env, "各位小朋友") == [str(first)], 120, "the first image indexed by its path")
    assert _booked(home) == [(str(first).encode(), 1)]

    r = cli(env, "watch", str(pics), "--name", "Pics")
    assert f"named {pics} 'pics'" in r.stdout
    # Rebooked under the name, the same content row: not OCR'd again (one attempt).
    assert _booked(home) == [(f"pics:/{first.name}".encode(), 1)]
    assert _search(env, "各位小朋友") == [str(first)]
    [second] = copy_corpus(pics, [other])
    wait_for(lambda: len(_booked(home)) == 2, 120, "the second image booked")
    assert sorted(p for p, _ in _booked(home)) == sorted(f"pics:/{f.name}".encode() for f in (first, second))
    status = json.loads(cli(env, "status", "--json").stdout)
    assert status["named_roots"] == {"pics": {"here": str(pics)}}
    assert status["roots"] == [str(pics)]
    assert status["counts"]["paths"] == 2

    # A root named inside it by editing the config and reloading (SIGHUP): files there are booked by that name.
    config = tmp_path / "config" / "pixgrep" / "config.toml"
    doc = tomlkit.parse(config.read_text())
    doc["roots"]["sub"] = str(pics / "sub")  # type: ignore[index]
    config.write_text(tomlkit.dumps(doc))
    d.signal(signal.SIGHUP)
    wait_for(lambda: "sub" in json.loads(cli(env, "status", "--json").stdout)["named_roots"], 30, "the reload")
    [third] = copy_corpus(pics / "sub", corpus_files(1, offset=5))
    wait_for(lambda: len(_booked(home)) == 3, 120, "the third image booked")
    assert f"sub:/{third.name}".encode() in {p for p, _ in _booked(home)}

    # unwatch --forget takes this host's path of the named root, and the root named inside it goes too.
    r = cli(env, "unwatch", str(pics), "--forget")
    assert "forgot 3 indexed files" in r.stdout
    assert _booked(home) == []
