"""Private by default (issue 9, defects 1 and 7): no listener another user can use, state 0700/0600."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from procnet import intruder, run_as, tcp_listeners

DIM = 4


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def _segs() -> list[object]:
    from pixgrep.store import Segment

    return [Segment("full", "ocr", "hello", "hello"), Segment("line", "ocr", "hello", "")]


def _modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in (*dirnames, *filenames):
            p = Path(dirpath, n)
            if not p.is_symlink():
                out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


@pytest.mark.slow
def test_embedded_milvus_opens_no_tcp_listener(home: Path) -> None:
    """Defect 1: pymilvus serves a .db on 127.0.0.1:<port> unauthenticated; ours is a Unix socket in a 0700 folder."""
    from pixgrep.store import MilvusStore

    home.mkdir(parents=True)
    before = set(tcp_listeners(os.getpid()))
    st = MilvusStore(str(home / "milvus.db"), collection="c", embed_name="m", dim=DIM)
    try:
        opened = set(tcp_listeners(os.getpid())) - before
        assert not opened, f"the store opened TCP listeners: {opened}"
        sockets = list(Path(os.environ["XDG_RUNTIME_DIR"]).glob("pixgrep-milvus-*/milvus.sock"))
        assert len(sockets) == 1, sockets
        assert stat.S_IMODE(sockets[0].parent.stat().st_mode) == 0o700
        vecs = np.eye(2, DIM, dtype=np.float32)
        st.upsert("h1", _segs(), vecs)  # type: ignore[arg-type]
        assert st.segments_per_content() == {"h1": 2}
    finally:
        st.close()
    # Closing the last user stops the server, frees the data for another process and removes the socket.
    assert not list(Path(os.environ["XDG_RUNTIME_DIR"]).glob("pixgrep-milvus-*"))
    st = MilvusStore(str(home / "milvus.db"), collection="c", embed_name="m", dim=DIM)
    assert st.segments_per_content() == {"h1": 2}
    st.close()


@pytest.mark.slow
def test_state_is_private_whatever_the_umask(home: Path, umask_022: None) -> None:
    """Defect 7: with umask 022 the state folder was 0755 and pixgrep.sqlite 0644."""
    from pixgrep.catalog import Catalog
    from pixgrep.store import MilvusStore

    # An older pixgrep left the folder and a file open to everyone: opening tightens them.
    home.mkdir(mode=0o755, parents=True)
    os.chmod(home, 0o755)
    (home / "old.log").write_text("x")
    os.chmod(home / "old.log", 0o644)
    db = Catalog(home / "pixgrep.sqlite")
    db.add_roots(["/somewhere"])  # a write, so that -wal and -shm exist
    st = MilvusStore(str(home / "milvus.db"), collection="c", embed_name="m", dim=DIM)
    try:
        st.upsert("h1", _segs(), np.eye(2, DIM, dtype=np.float32))  # type: ignore[arg-type]
        st.flush()
        modes = _modes(home)
        assert {"pixgrep.sqlite", "pixgrep.sqlite-wal", "milvus.db", "milvus.c.vectors.sqlite"} <= set(modes)
        loose = {p: oct(m) for p, m in modes.items() if m & 0o077}
        assert not loose, f"open to group or others: {loose}"
        assert modes["."] == 0o700 and modes["pixgrep.sqlite"] == 0o600
    finally:
        st.close()
        db.close()


@pytest.mark.slow
def test_a_second_user_cannot_reach_the_daemon_or_its_state(tmp_path: Path) -> None:
    """Defects 1 and 7 end to end: another uid can use no TCP listener of the daemon (the gallery's asks for its
    token; nothing else listens), is refused by the API socket and cannot read the state, with the daemon started
    under umask 022 in world-traversable folders."""
    ids = intruder()
    if isinstance(ids, str):
        pytest.skip(ids)
    from test_daemon import DaemonProc

    # Folders others may traverse, so that pixgrep's own modes are what keeps them out.
    base = Path(tempfile.mkdtemp(prefix="pixgrep-privacy-"))
    try:
        os.chmod(base, 0o755)
        home, run, cfg = base / "home", base / "run", base / "config"
        for d in (run, cfg):
            d.mkdir(mode=0o755)
            os.chmod(d, 0o755)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PIXGREP_")}
        env.update(
            PIXGREP_HOME=str(home),
            XDG_RUNTIME_DIR=str(run),
            XDG_CONFIG_HOME=str(cfg),
            PIXGREP_OCR__WORKERS="1",
        )
        old = os.umask(0o022)
        try:
            d = DaemonProc(env, tmp_path / "daemon.log")
            d.start()
        finally:
            os.umask(old)
        try:
            assert d.proc is not None
            listeners = tcp_listeners(d.proc.pid)
            probe = run_as(ids, _INTRUDER, json.dumps({"tcp": listeners, "socket": str(d.socket), "home": str(home)}))
            assert probe.returncode == 0, probe.stderr
            got = json.loads(probe.stdout)
            # A TCP listener (the gallery) must refuse a request without its token; no other may answer.
            assert got["tcp"] == [], f"the other user used TCP listeners of the daemon: {got['tcp']}"
            assert len(listeners) <= 1, f"the daemon listens on TCP more than the gallery: {listeners}"
            assert got["socket"].startswith("refused"), got["socket"]
            assert got["read"] == [], f"the other user read {got['read']}"
        finally:
            d.kill()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# Runs as the other user in the system Python: stdlib only.
_INTRUDER = r"""
import json, os, socket, sys
a = json.loads(sys.argv[1])
out = {"tcp": [], "read": []}
for host, port, pid in a["tcp"]:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(("::1" if fam == socket.AF_INET6 and host == "::" else host, port))
    except OSError:
        s.close()
        continue
    try:  # connected: only an HTTP 401/403 (an authenticating listener) is acceptable
        s.sendall(f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n".encode())
        first = s.recv(200).split(b"\r\n", 1)[0].decode("latin-1")
    except OSError as e:
        first = "no answer: " + type(e).__name__
    finally:
        s.close()
    if first.split(" ")[1:2] not in (["401"], ["403"]):
        out["tcp"].append([host, port, first])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
try:
    s.connect(a["socket"])
    out["socket"] = "connected"
except OSError as e:
    out["socket"] = "refused: " + type(e).__name__
finally:
    s.close()
for dirpath, dirnames, filenames in os.walk(a["home"], onerror=lambda e: None):
    for n in filenames:
        try:
            with open(os.path.join(dirpath, n), "rb") as f:
                f.read(1)
            out["read"].append(os.path.join(dirpath, n))
        except OSError:
            pass
for n in ("pixgrep.sqlite", "milvus.db/LOCK"):
    try:
        with open(os.path.join(a["home"], n), "rb") as f:
            f.read(1)
        out["read"].append(n)
    except OSError:
        pass
print(json.dumps(out))
"""
