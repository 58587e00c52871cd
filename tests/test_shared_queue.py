"""The queue and the books shared by several daemons: SKIP LOCKED claims, requeue marks, leases, heartbeats.

Each test runs on SQLite (fast tier) and on a real PostgreSQL (slow: it starts a server).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pixgrep.catalog import Catalog, Job, Queue, QueueState
from pixgrep.service.fleet import Heartbeat, describe


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.slow)])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'books.sqlite'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def books(url: str) -> Iterator[Catalog]:
    c = Catalog(url)
    yield c
    c.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


def _state(q: Queue, path: str) -> str:
    return next(state for p, _, state, _ in q.rows() if p == path)


def test_two_daemons_never_claim_the_same_row(books: Catalog, url: str) -> None:
    other = Catalog(url)
    try:
        qa, qb = Queue(books, host="a"), Queue(other, host="b")
        qa.put(Job(f"/pics/{i:03d}.png") for i in range(120))
        got: dict[str, list[int]] = {"a": [], "b": []}

        def drain(name: str, q: Queue) -> None:
            while items := q.claim(5):
                got[name] += [it.id for it in items]
                q.done(items)

        threads = [threading.Thread(target=drain, args=(n, q)) for n, q in (("a", qa), ("b", qb))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not set(got["a"]) & set(got["b"])
        assert len(got["a"]) + len(got["b"]) == 120
        assert qa.depth()[QueueState.DONE] == 120
    finally:
        other.close()


def test_an_event_during_processing_requeues_the_path_when_its_holder_is_done(books: Catalog) -> None:
    qa, qb = Queue(books, host="a"), Queue(books, host="b")
    qa.put([Job("/pics/x.png")])
    held = qa.claim(10)
    # Daemon b's watcher saw the same file change: the row stays with a, marked.
    qb.put([Job("/pics/x.png")])
    assert _state(qa, "/pics/x.png") == QueueState.PROCESSING
    assert qb.claim(10) == []
    qa.done(held)
    assert _state(qa, "/pics/x.png") == QueueState.PENDING
    assert [it.path for it in qb.claim(10)] == ["/pics/x.png"]


def test_a_dead_daemons_claims_return_after_their_lease(books: Catalog) -> None:
    clock = Clock()
    qa = Queue(books, host="a", clock=clock, lease_seconds=10)
    qb = Queue(books, host="b", clock=clock, lease_seconds=10)
    qa.put([Job("/pics/x.png"), Job("/pics/y.png")])
    held = qa.claim(1)
    clock.t += 5
    qa.extend(clock.t + 10)  # a's heartbeat
    clock.t += 9
    assert qb.reclaim_expired() == 0  # still a's
    clock.t += 2  # a stopped beating 11 s ago
    assert qb.reclaim_expired() == 1
    taken = qb.claim(10)
    assert sorted(it.path for it in taken) == ["/pics/x.png", "/pics/y.png"]
    # a wakes up late: its claim is no longer its own, so it changes nothing.
    qa.done(held)
    assert _state(qa, held[0].path) == QueueState.PROCESSING
    qb.done(taken)
    assert qa.depth()[QueueState.DONE] == 2


def test_recover_returns_only_this_hosts_claims(books: Catalog) -> None:
    clock = Clock()
    qa = Queue(books, host="a", clock=clock)
    qb = Queue(books, host="b", clock=clock)
    qa.put([Job("/pics/x.png"), Job("/pics/y.png")])
    qa.claim(1)
    qb.claim(1)
    # A restarted daemon on host a takes back what a left, not what b is working on.
    assert Queue(books, host="a", clock=clock).recover() == 1
    assert sorted(s for _, _, s, _ in qa.rows()) == [QueueState.PENDING, QueueState.PROCESSING]


def test_content_leases(books: Catalog) -> None:
    assert books.lease_content("h1", "a", until=110, now=100)
    assert not books.lease_content("h1", "b", until=115, now=105)
    assert books.lease_content("h1", "a", until=120, now=106)  # the holder renews
    books.release_content_leases("a", ["h1"])
    assert books.lease_content("h1", "b", until=130, now=107)
    assert books.lease_content("h1", "a", until=200, now=131)  # b's ran out


def test_heartbeat_lists_daemons_and_marks_a_clean_stop(books: Catalog) -> None:
    q = Queue(books, host="host-a")
    hb = Heartbeat(books, q, version="1", interval=0.05, stats=lambda: {"images_per_second": 2.5})
    hb.start()
    try:
        time.sleep(0.2)
        [d] = describe(books.daemons(), lease_seconds=60)
        assert (d["host"], d["state"], d["alive"], d["images_per_second"]) == ("host-a", "running", True, 2.5)
    finally:
        assert hb.stop(5)
    [d] = describe(books.daemons(), lease_seconds=60)
    assert (d["state"], d["alive"]) == ("stopped", False)
    # Silent longer than a lease while it claims to run: lost.
    [d] = describe([{**d, "state": "running"}], lease_seconds=60, now=d["last_beat"] + 61)
    assert (d["state"], d["alive"]) == ("lost", False)


def test_hosts_mounting_a_named_root_elsewhere_share_its_rows_and_others_leave_them(books: Catalog, url: str) -> None:
    """Named roots (pixgrep.roots) on both databases: one row per file whatever host's path queued it, claimed
    under the claimer's own mount point, never by a host that does not mount the root."""
    from pixgrep.roots import RootMap

    books.use_mounts(RootMap.of({"nas": "/mnt/nas"}))
    other, bare = Catalog(url), Catalog(url)
    try:
        other.use_mounts(RootMap.of({"nas": "/Volumes/nas"}))
        qa, qb, qc = Queue(books, host="a"), Queue(other, host="b"), Queue(bare, host="c")
        qa.put([Job("/mnt/nas/x.png"), Job("/home/a/local.png")])
        qb.put([Job("/Volumes/nas/x.png")])
        assert len(qa.rows()) == 2
        assert [it.path for it in qc.claim(10)] == ["/home/a/local.png"]  # absolute: anyone's
        assert qc.claim(10) == [] and qc.next_due() is None
        [item] = qb.claim(10)
        assert item.path == "/Volumes/nas/x.png"
        assert qa.claim(10) == []
    finally:
        other.close()
        bare.close()


def test_naming_an_indexed_root_rebooks_it_in_bulk_and_a_booked_key_wins(books: Catalog, url: str) -> None:
    """``Catalog.use_mounts`` on both databases: absolute rows under the mount become keys; where another host
    already booked the key, the absolute twin goes (its content keeps the key's row)."""
    from pixgrep.catalog import Link
    from pixgrep.roots import RootMap

    books.seed([{"hash": h, "status": "done"} for h in ("h1", "h2", "h3")], [])
    books.link([Link("/mnt/nas/a.png", "/mnt/nas", "h1", 1, 2, 3), Link("/mnt/nas/b.png", "/mnt/nas", "h2", 1, 2, 3)])
    books.link([Link("nas:/b.png", "nas:", "h3", 1, 2, 3), Link("/home/c.png", None, "h3", 1, 2, 3)])
    books.add_roots(["/mnt/nas"])
    Queue(books).put([Job("/mnt/nas/q.png"), Job("/home/q.png")])
    assert books.use_mounts(RootMap.of({"nas": "/mnt/nas"})) == 4
    bare = Catalog(url)
    try:
        assert bare.paths() == {"nas:/a.png": "h1", "nas:/b.png": "h3", "/home/c.png": "h3"}
        assert bare.roots() == ["nas:"]
        assert sorted(p for p, *_ in Queue(bare).rows()) == ["/home/q.png", "nas:/q.png"]
        assert bare.path_entry("nas:/a.png").root == "nas:"  # type: ignore[union-attr]
    finally:
        bare.close()
    assert books.orphans() == ["h2"]  # the absolute twin's bytes: purged by the next purge_orphans
