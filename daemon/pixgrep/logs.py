"""Logging: named loggers, the file being processed in context, journald under systemd."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, ClassVar


class _FileContext(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        f = getattr(record, "file", None)
        record.file_ctx = f" [{f}]" if f else ""
        return True


def setup_logging(level: str = "INFO", *, settings: Any = None) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler: logging.Handler | None = None
    if os.environ.get("JOURNAL_STREAM"):
        try:
            from systemd.journal import JournalHandler  # type: ignore[import-not-found]

            handler = JournalHandler(SYSLOG_IDENTIFIER="pixgrep")
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s%(file_ctx)s"))
        except ImportError:
            # stderr is connected to the journal anyway; the <N> prefix sets the priority.
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(_PriorityFormatter("%(name)s: %(message)s%(file_ctx)s"))
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s%(file_ctx)s"))
    handler.addFilter(_FileContext())
    root.addHandler(handler)
    root.setLevel(level)
    # Milvus Lite's in-process gRPC server logs a traceback for each AllocTimestamp
    # call that pymilvus makes and then falls back from; it is not an error of ours.
    logging.getLogger("grpc._server").setLevel(logging.CRITICAL)
    quiet_pymilvus()
    for noisy in ("faiss.loader", "milvus_lite", "RapidOCR", "jieba", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class _PriorityFormatter(logging.Formatter):
    _PRI: ClassVar[dict[int, int]] = {
        logging.DEBUG: 7,
        logging.INFO: 6,
        logging.WARNING: 4,
        logging.ERROR: 3,
        logging.CRITICAL: 2,
    }

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self._PRI.get(record.levelno, 6)}>{super().format(record)}"


def quiet_pymilvus() -> None:
    """pymilvus logs every failed RPC with its whole traceback (40 KB for one outage mid-run) through handlers
    of its own that its import installs: pixgrep reports the failure in one line, so pymilvus speaks only at
    DEBUG. Called again after pymilvus is imported, since that import resets its loggers."""
    debug = logging.getLogger().level <= logging.DEBUG
    for name in ("pymilvus", "pymilvus.milvus_client", "pymilvus.bulk_writer"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.CRITICAL)
