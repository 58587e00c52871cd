"""``unwatch --forget`` removes exactly what it names (issue 9, defect 4)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from conftest import copy_corpus, corpus_files, wait_for
from pixgrep.forget import ForgetRefused, plan, summary


def test_plan_keeps_watched_folders_below_and_ignores_the_one_unwatched() -> None:
    p = plan("/pics", ["/pics", "/pics/kid", "/pics/kid/deeper", "/pictures", "/other"])
    assert p.path == "/pics" and p.keep == ["/pics/kid", "/pics/kid/deeper"]  # not /pictures: a sibling
    assert plan("/", ["/home/me/pics"]).keep == ["/home/me/pics"]
    assert plan("/pics/", []).path == "/pics"


@pytest.mark.parametrize("path", ["/pics/kid", "/pics/kid/sub", "/pics"])
def test_plan_refuses_a_folder_inside_one_that_stays_watched(path: str) -> None:
    watched = ["/pics"] if path != "/pics" else ["/"]
    with pytest.raises(ForgetRefused, match="nothing was forgotten"):
        plan(path, watched)


def test_summary_says_what_was_removed_and_kept() -> None:
    assert summary("/p", was_watched=False, forgotten=3, kept=["/p/k"]) == (
        "/p was not watched; forgot 3 indexed files under it, kept those under the watched folder /p/k"
    )
    assert (
        summary("/p", was_watched=True, forgotten=0, kept=[]) == "stopped watching /p; forgot 0 indexed files under it"
    )


def _paths(home: Path) -> set[str]:
    with sqlite3.connect(f"file:{home / 'pixgrep.sqlite'}?mode=ro", uri=True, timeout=30) as c:
        return {os.fsdecode(p) for (p,) in c.execute("SELECT path FROM paths WHERE content_hash IS NOT NULL")}


@pytest.mark.slow
def test_unwatch_forget_through_the_daemon_never_takes_a_watched_folders_images(tmp_path: Path, home: Path) -> None:
    from test_daemon import DaemonProc, cli

    env = dict(os.environ, PIXGREP_OCR__WORKERS="1", PIXGREP_WATCH__STABLE_SECONDS="0.3")
    pics = tmp_path / "pics"
    files = corpus_files(6, stride=97)
    loose = copy_corpus(pics / "loose", files[:3])
    kid = copy_corpus(pics / "kid", files[3:5]) + copy_corpus(pics / "kid" / "sub", files[5:])
    cli(env, "watch", str(pics / "kid"))
    d = DaemonProc(env, tmp_path / "daemon.log")
    d.start()
    try:
        cli(env, "index", str(pics / "loose"))
        want = {str(p) for p in loose + kid}
        wait_for(lambda: _paths(home) == want, 120, "the daemon to index both folders")

        # Inside a watched folder: refused, nothing removed, still watched.
        r = cli(env, "unwatch", str(pics / "kid" / "sub"), "--forget", check=False)
        assert r.returncode == 1 and "inside the watched folder" in r.stderr and len(r.stderr.splitlines()) == 1
        assert _paths(home) == want

        # The parent of a watched folder, not watched itself: its other images go, the watched child's stay.
        r = cli(env, "unwatch", str(pics), "--forget", check=False)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == (
            f"{pics} was not watched; forgot 3 indexed files under it, "
            f"kept those under the watched folder {pics / 'kid'}"
        )
        assert _paths(home) == {str(p) for p in kid}

        # `unwatch / --forget` leaves the watched folder's images alone and says it forgot nothing.
        r = cli(env, "unwatch", "/", "--forget", check=False)
        assert r.returncode == 1 and "/ was not watched; forgot 0 indexed files" in r.stdout
        assert _paths(home) == {str(p) for p in kid}
        assert str(pics / "kid") in d.api("GET", "/v1/status")["watched"]
    finally:
        d.kill()
