"""Where embedded Milvus Lite's private socket lives, and that a failed start frees the data."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from pixgrep import litehost


def test_socket_folder_prefers_the_pixgrep_runtime_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # Under the system unit XDG_RUNTIME_DIR is /run (root's); /run/pixgrep is the unit's own.
    # A short folder: a socket path must fit in 107 bytes.
    run = Path(tempfile.mkdtemp(prefix="lh", dir="/tmp"))
    (run / "pixgrep").mkdir(parents=True, mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    assert litehost.socket_base() == str(run / "pixgrep")
    (run / "pixgrep").rmdir()
    assert litehost.socket_base() == str(run)
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert litehost.socket_base() == tempfile.gettempdir()
    run.rmdir()


@pytest.mark.slow
def test_a_failed_start_leaves_the_data_unlocked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "milvus.db"
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir(mode=0o700)

    def no_room(*a: object, **kw: object) -> str:
        raise PermissionError(13, "Permission denied")

    with monkeypatch.context() as m:
        m.setattr(litehost.tempfile, "mkdtemp", no_room)
        with pytest.raises(PermissionError):
            litehost.acquire(data)
    uri = litehost.acquire(data)  # raised StoreLocked while the first try's LOCK leaked
    try:
        assert uri.startswith("unix:")
    finally:
        litehost.release(data)
