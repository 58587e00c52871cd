"""The catalog's records and their state machine (pixgrep.catalog's docstring), on a real SQLite file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pixgrep.catalog import Catalog, ContentStatus, Indexed, Link, is_settled


@pytest.fixture
def cat(tmp_path: Path) -> Iterator[Catalog]:
    c = Catalog(tmp_path / "books.sqlite")
    yield c
    c.close()


def _link(path: str, digest: str, size: int = 1) -> Link:
    return Link(path, "/pics", digest, size, 1, 1)


def _indexed(digest: str, *paths: str) -> Indexed:
    lines = [{"text": "hello", "score": 0.9, "box": None}]
    return Indexed(digest, lines, [], 10, 10, "ocr", {"ocr": "x"}, [_link(p, digest) for p in paths])


def test_settled_means_done_or_failed_for_good() -> None:
    assert is_settled("done", False) and is_settled("failed", False)
    assert not is_settled("failed", True) and not is_settled("pending", True) and not is_settled(None, None)


def test_a_transient_failure_is_retried_until_max_attempts_and_a_permanent_one_settles(cat: Catalog) -> None:
    for attempt in (1, 2):
        assert (
            cat.record_failure("h", "Milvus down", retryable=True, max_attempts=3, links=[_link("/pics/a", "h")]) == []
        )
        c = cat.content("h")
        assert c is not None and (c.status, c.attempts, c.settled) == (ContentStatus.PENDING, attempt, False)
    assert cat.retry_pending_paths() == ["/pics/a"]
    cat.record_failure("h", "Milvus down", retryable=True, max_attempts=3, links=[_link("/pics/a", "h")])
    c = cat.content("h")
    assert c is not None and c.status == ContentStatus.FAILED and c.retryable and not c.settled
    assert cat.retry_pending_paths() == []  # no automatic retry any more ...
    assert cat.failed_paths() == ["/pics/a"]  # ... but it is listed, and reindex --failed resets it
    cat.reset_failed()
    c = cat.content("h")
    assert c is not None and (c.status, c.attempts) == (ContentStatus.PENDING, 0)

    cat.record_failure("bad", "not an image", retryable=False, max_attempts=3, links=[_link("/pics/b", "bad")])
    c = cat.content("bad")
    assert c is not None and c.status == ContentStatus.FAILED and c.settled
    assert cat.settled_stats(["/pics/b"])["/pics/b"][3:] == ("bad", "not an image")


def test_a_path_error_is_listed_until_the_path_is_linked(cat: Catalog) -> None:
    cat.record_path_error("/pics/locked.jpg", "/pics", "Permission denied")
    cat.record_path_error("/pics/locked.jpg", "/pics", "Permission denied")
    assert cat.failures() == [{"path": "/pics/locked.jpg", "error": "Permission denied", "attempts": 2}]
    assert cat.counts()["failed"] == 1
    cat.record_indexed([_indexed("h", "/pics/locked.jpg")])
    assert cat.failures() == [] and cat.counts()["indexed"] == 1
    e = cat.path_entry("/pics/locked.jpg")
    assert e is not None and (e.error, e.attempts, e.content_hash) == (None, 0, "h")


def test_forgetting_returns_orphans_and_deletes_only_rows_still_without_a_path(cat: Catalog) -> None:
    cat.record_indexed([_indexed("h", "/pics/a", "/pics/b"), _indexed("g", "/pics/c")])
    assert cat.remove_paths(["/pics/a"]) == (1, [])  # b still holds h
    assert cat.link([_link("/pics/c", "h")]) == ["g"]  # c now holds h: g lost its last path
    assert cat.orphans() == ["g"]  # committed, and still in the books until its vectors are gone
    assert cat.delete_orphans(["g"]) == ["g"] and cat.content("g") is None

    assert cat.remove_paths(["/pics/b", "/pics/c"]) == (2, ["h"])
    cat.link([_link("/pics/again", "h")])  # the same bytes came back before the vectors were deleted
    assert cat.delete_orphans(["h"]) == []
    c = cat.content("h")
    assert c is not None and c.status == ContentStatus.PENDING and not c.settled  # indexed again next run
    assert cat.retry_pending_paths() == ["/pics/again"]


def test_a_move_keeps_the_content_unless_the_file_changed(cat: Catalog) -> None:
    cat.record_indexed([_indexed("h", "/pics/a"), _indexed("g", "/pics/b")])
    assert cat.move("/pics/a", "/pics/b", size=1, mtime_ns=1, inode=7, root=None) == ["g"]  # b held g
    assert cat.path_entry("/pics/a") is None
    e = cat.path_entry("/pics/b")
    assert e is not None and (e.content_hash, e.inode, e.root) == ("h", 7, "/pics")
    assert cat.move("/pics/b", "/pics/c", size=2, mtime_ns=1, inode=7, root=None) is None  # size changed
    assert cat.move("/pics/unknown", "/pics/c", size=1, mtime_ns=1, inode=7, root=None) is None


def test_known_under_keys_raw_bytes_and_says_what_is_settled(cat: Catalog, tmp_path: Path) -> None:
    odd = os.fsdecode(b"/pics/caf\xe9.jpg")
    cat.record_indexed([_indexed("h", odd)])
    cat.record_failure("p", "Milvus down", retryable=True, max_attempts=5, links=[_link("/pics/p.jpg", "p")])
    cat.record_indexed([_indexed("x", "/pictures/x.jpg")])  # a sibling folder with the same prefix
    assert cat.known_under("/pics") == {b"/pics/caf\xe9.jpg": (1, 1, 1, True), b"/pics/p.jpg": (1, 1, 1, False)}
    assert cat.paths_under("/pics") == sorted([odd, "/pics/p.jpg"])
    assert cat.paths_for(["h", "p", "x"], "/pics") == {"h": [odd]}  # only indexed contents are shown


def test_roots(cat: Catalog) -> None:
    cat.add_roots(["/a", "/b", "/a"])
    cat.remove_root("/b")
    assert cat.roots() == ["/a"]
