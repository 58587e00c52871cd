"""What `pixgrep search` prints and does with results: bare paths, NUL, --open, --explain, no good match."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_for
from pixgrep.filters import filters_from, parse_date
from pixgrep.results import explain
from pixgrep_cli.show import NO_GOOD_MATCH, Show, show_results

RESULTS: list[dict[str, Any]] = [
    {
        "path": "/pics/a b.jpg",
        "score": 0.91,
        "source": "ocr",
        "text": "今天不開心",
        "snippet": "今天不開心",
        "spans": [[0, 2]],
        "keyword_score": 3.2,
        "keyword_rank": 1,
        "keyword_text": "今天不開心",
        "coverage": 1.0,
        "dense_score": 0.42,
        "dense_rank": 3,
        "dense_text": "今天",
        "relevance": 1.21,
    },
    {
        "path": "/pics/new\nline.png",
        "score": 0.5,
        "source": "caption",
        "text": "a dog",
        "snippet": "a dog",
        "spans": [],
    },
]


def test_paths_one_a_line_and_nul_separated(capfdbinary: pytest.CaptureFixture[bytes]) -> None:
    assert show_results(RESULTS, Show(paths=True)) == 0
    assert capfdbinary.readouterr().out == b"/pics/a b.jpg\n/pics/new\nline.png\n"
    assert show_results(RESULTS, Show(nul=True)) == 0
    assert capfdbinary.readouterr().out == b"/pics/a b.jpg\0/pics/new\nline.png\0"


def test_nothing_found_says_no_good_match_and_exits_1(capfd: pytest.CaptureFixture[str]) -> None:
    assert show_results([], Show()) == 1
    out, err = capfd.readouterr()
    assert out == "" and err.strip() == f"pixgrep: {NO_GOOD_MATCH}"
    assert show_results([], Show(all=True)) == 1
    assert "no matches" in capfd.readouterr().err
    assert show_results([], Show(paths=True)) == 1
    assert capfd.readouterr() == ("", "")  # scripts get an empty list and the exit code


def test_explain_shows_both_legs_and_the_fused_score(capfd: pytest.CaptureFixture[str]) -> None:
    assert show_results(RESULTS, Show(explain=True)) == 0
    out = capfd.readouterr().out
    assert "keyword  bm25 3.200 (rank 1), covers 100% of the query: 今天不開心" in out
    assert "dense    cosine 0.420 (rank 3): 今天" in out
    assert "fused    0.9100, relevance 1.210" in out
    assert explain(RESULTS[1])[:2] == ["keyword  no match", "dense    no match"]


def test_open_runs_xdg_open_on_hit_n(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: Any) -> None:
    log = tmp_path / "opened"
    fake = tmp_path / "bin" / "xdg-open"
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {log}\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    assert show_results(RESULTS, Show(paths=True, open_n=2)) == 0
    wait_for(lambda: log.exists() and log.read_text(), 30, "xdg-open to run")
    assert log.read_text() == "/pics/new\nline.png"
    assert show_results(RESULTS, Show(paths=True, open_n=3)) == 64
    assert "there are 2 results" in capfd.readouterr().err
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert show_results(RESULTS, Show(paths=True, open_n=1)) == 69


def test_date_and_type_filters(tmp_path: Path) -> None:
    old, new, png = tmp_path / "old.jpg", tmp_path / "new.jpg", tmp_path / "x.PNG"
    for p in (old, new, png):
        p.write_bytes(b"x")
    os.utime(old, (parse_date("2020-01-01") + 3600,) * 2)
    os.utime(new, (parse_date("2024-06-01") + 3600,) * 2)
    f = filters_from(since="2021-01-01")
    assert not f.path_ok(str(old)) and f.path_ok(str(new))
    f = filters_from(until="2020-01-01")  # the whole day
    assert f.path_ok(str(old)) and not f.path_ok(str(new))
    f = filters_from(types=["png"])
    assert f.path_ok(str(png)) and not f.path_ok(str(new))
    assert filters_from(types=["jpg"]).path_ok(str(new))
    assert not filters_from(since="2000-01-01").path_ok(str(tmp_path / "gone.jpg"))
    with pytest.raises(ValueError, match="bad date"):
        filters_from(since="last tuesday")
    with pytest.raises(ValueError, match="unknown image type"):
        filters_from(types=["mp4"])
