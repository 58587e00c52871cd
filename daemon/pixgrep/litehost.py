"""Embedded Milvus Lite, served on a Unix socket that only this user can reach.

pymilvus starts Milvus Lite for a ``.db`` URI through ``milvus_lite.server_manager``,
which serves the data over gRPC on ``127.0.0.1:<free port>`` with no
authentication: any local user could connect and read or delete the whole
index (issue 9, defect 1). Here the same server (milvus_lite's own servicer)
listens on a Unix socket in a fresh directory made by ``mkdtemp`` (mode 0700,
unpredictable name) instead, and no TCP port is opened at all: only this uid
(and root) can connect.

Servers are shared per data directory within a process and counted: the last
``release`` stops the server and closes the MilvusLite, which frees its
data-dir ``LOCK`` for another process.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pixgrep.errors import StoreLocked, StoreUnavailable

log = logging.getLogger("pixgrep.litehost")

PREFIX = "pixgrep-milvus-"
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_WORKERS = 10  # milvus_lite's default gRPC thread pool
_MAX_MESSAGE = 256 * 1024 * 1024  # milvus_lite's limit, matching Milvus standalone


@dataclass
class _Served:
    server: Any
    db: Any
    folder: str
    users: int


_lock = threading.Lock()
_served: dict[str, _Served] = {}


def socket_base() -> str:
    """The folder the socket's own folder is made in: a runtime dir this user can write, else the temp dir.

    ``$XDG_RUNTIME_DIR/pixgrep`` first: under the system unit XDG_RUNTIME_DIR is ``/run``,
    which only root may write, while ``/run/pixgrep`` is the unit's RuntimeDirectory.
    """
    run = os.environ.get("XDG_RUNTIME_DIR")
    for base in (os.path.join(run, "pixgrep"), run) if run else ():
        if (
            os.path.isdir(base)
            and os.access(base, os.W_OK | os.X_OK)
            and len(os.fsencode(base)) < _MAX_SOCKET_PATH - 40
        ):
            return base
    return tempfile.gettempdir()


def _sweep(base: str) -> None:
    """Remove socket folders of our processes that died without cleaning up (kill -9)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(base):
            if not entry.name.startswith(PREFIX) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            try:
                pid = int(Path(entry.path, "pid").read_text())
                os.kill(pid, 0)
            except ProcessLookupError:
                shutil.rmtree(entry.path, ignore_errors=True)
            except (OSError, ValueError):
                continue


def _build_server(db: Any) -> Any:
    """milvus_lite's own gRPC servicer, as its ``_build_server`` makes it, but tolerating pymilvus's keepalive pings.

    pymilvus pings every 10 s even between calls; gRPC's server defaults answer that with a GOAWAY
    ("too_many_pings") that drops the connection under an idle daemon.
    """
    from concurrent import futures

    import grpc
    from milvus_lite.adapter.grpc.servicer import MilvusServicer
    from pymilvus.grpc_gen import milvus_pb2_grpc

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="milvus_lite-grpc"),
        options=[
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            ("grpc.http2.max_ping_strikes", 0),
        ],
    )
    milvus_pb2_grpc.add_MilvusServiceServicer_to_server(MilvusServicer(db), server)
    return server


def _start(data_dir: str) -> _Served:
    from milvus_lite.db import MilvusLite
    from milvus_lite.exceptions import DataDirLockedError
    from milvus_lite.server_manager import server_manager_instance

    # pymilvus may have opened this data dir itself (a plain MilvusClient("….db") in this process):
    # stop that TCP server, which also frees the data-dir lock for ours.
    server_manager_instance.release_server(data_dir)
    try:
        db = MilvusLite(data_dir)
    except DataDirLockedError as e:
        raise StoreLocked(f"the Milvus Lite data at {data_dir} is in use by another process") from e
    folder: str | None = None
    try:
        base = socket_base()
        _sweep(base)
        folder = tempfile.mkdtemp(prefix=PREFIX, dir=base)  # 0700, unpredictable name
        Path(folder, "pid").write_text(str(os.getpid()))
        sock = os.path.join(folder, "milvus.sock")
        server = _build_server(db)
        if not server.add_insecure_port(f"unix:{sock}"):
            raise StoreUnavailable(f"Milvus Lite could not listen on {sock}")
        server.start()
    except BaseException:
        # Close the data even when the folder could not be made: a leaked LOCK reads as "in use".
        db.close()
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    log.debug("Milvus Lite for %s serves on %s", data_dir, sock)
    return _Served(server, db, folder, 0)


def acquire(data_dir: str | os.PathLike[str]) -> str:
    """Serve the Milvus Lite data at ``data_dir`` (or share the running server); returns a ``unix:`` URI.

    Raises StoreLocked when another process holds the data.
    """
    key = os.path.abspath(data_dir)
    with _lock:
        served = _served.get(key)
        if served is None:
            served = _served[key] = _start(key)
        served.users += 1
        return f"unix:{os.path.join(served.folder, 'milvus.sock')}"


def release(data_dir: str | os.PathLike[str]) -> None:
    """Drop one user of the server; the last one stops it and closes the data."""
    key = os.path.abspath(data_dir)
    with _lock:
        served = _served.get(key)
        if served is None:
            return
        served.users -= 1
        if served.users > 0:
            return
        del _served[key]
    try:
        served.server.stop(grace=2).wait(5)
    finally:
        served.db.close()
        shutil.rmtree(served.folder, ignore_errors=True)
