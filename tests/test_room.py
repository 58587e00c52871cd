"""A daemon started on a full disk waits for room (logic: a fake disk, a fake clock, a recording notifier)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from pixgrep import diskfull
from pixgrep.service.notify import Notifier
from pixgrep.service.room import wait_for_room


class Recorder(Notifier):
    def __init__(self) -> None:
        super().__init__(environ={})
        self.sent: list[str] = []

    def notify(self, message: str) -> bool:
        self.sent.append(message)
        return True


def test_waits_while_there_is_no_room_with_one_log_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    full = {"checks": 4}

    def no_room(_path: Path) -> bool:
        full["checks"] -= 1
        return full["checks"] > 0

    monkeypatch.setattr(diskfull, "no_room", no_room)
    slept: list[float] = []
    rec = Recorder()
    with caplog.at_level(logging.WARNING, logger="pixgrep.service"):
        waits = wait_for_room(tmp_path, interval=7.0, notifier=rec, sleep=slept.append)
    assert waits == 2 and slept == [7.0, 7.0]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"no space left on {tmp_path} (ENOSPC") and "waiting for room" in lines[0]
    assert "room on" in lines[1] and "again" in lines[1]
    # systemd hears why it is not ready yet, and that the start is not stuck.
    assert rec.sent.count("EXTEND_TIMEOUT_USEC=21000000") == 2
    assert any(m.startswith("STATUS=no space left on") for m in rec.sent)


def test_with_room_it_returns_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="pixgrep.service"):
        assert wait_for_room(tmp_path, sleep=lambda _s: pytest.fail("slept with room on the disk")) == 0
    assert caplog.records == []
