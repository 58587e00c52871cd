"""The worker's view of a store outage (logic, on a fake clock and a fake probe)."""

from __future__ import annotations

import pytest
from pixgrep.errors import DiskFull, StoreUnavailable
from pixgrep.service.outage import DiskOutage, Outage


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_probes_back_off_to_the_cap_and_the_outage_ends_when_the_store_answers() -> None:
    clock = Clock()
    up = {"ok": False}
    calls: list[float] = []

    def probe() -> None:
        calls.append(clock.t)
        if not up["ok"]:
            raise StoreUnavailable("Milvus connection refused")

    o = Outage(probe, first=0.5, cap=4.0, clock=clock, wall=clock)
    assert not o.down and o.describe() is None and o.probe()
    o.begin("Milvus upsert failed")
    assert o.down and o.describe() == "store unavailable since 1970-01-01 00:16:40 UTC: Milvus upsert failed"
    intervals = []
    for _ in range(6):
        wait = o.wait_seconds()
        assert not o.probe() or wait == 0  # not due yet: no probe made
        clock.t += wait
        assert not o.probe()
        intervals.append(wait)
    assert intervals == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(calls) == 6 and "connection refused" in (o.describe() or "")
    o.begin("another failure in the same outage")  # does not restart the clock or the backoff
    assert o.outages == 1 and o.wait_seconds() == 4.0
    up["ok"] = True
    clock.t += 4.0
    assert o.probe() and not o.down and o.describe() is None


def test_other_errors_from_the_probe_are_not_swallowed() -> None:
    def probe() -> None:
        raise RuntimeError("a bug")

    o = Outage(probe, first=0.0)
    o.begin("down")
    with pytest.raises(RuntimeError):
        o.probe()


def test_an_outage_right_after_the_last_one_keeps_backing_off() -> None:
    """A disk that refills at once (or a store that flaps) must not be retried at the first interval each time."""
    clock = Clock()
    o = Outage(lambda: None, first=0.5, cap=4.0, clock=clock, wall=clock)
    o.begin("down")
    clock.t += o.wait_seconds()
    assert o.probe()
    o.begin("down again at once")
    assert o.outages == 2 and o.wait_seconds() == 1.0
    clock.t += 1.0
    assert o.probe()
    clock.t += 60.0  # long after: a new outage starts over
    o.begin("down a minute later")
    assert o.wait_seconds() == 0.5


def test_a_full_disk_pauses_until_its_probe_finds_room() -> None:
    clock = Clock()
    room = {"ok": False}

    def probe() -> None:
        if not room["ok"]:
            raise DiskFull("/state", 28)

    o = DiskOutage(probe, clock=clock, wall=clock)
    o.begin(str(DiskFull("/state", 28)))
    assert (o.describe() or "").startswith("no space left on /state (ENOSPC")
    assert "queue paused since 1970-01-01 00:16:40 UTC" in (o.describe() or "")
    clock.t += o.wait_seconds()
    assert not o.probe() and o.down  # a DiskFull from the probe means: still full
    room["ok"] = True
    clock.t += o.wait_seconds()
    assert o.probe() and not o.down
