"""Failure kinds of the pipeline: what is worth retrying and what is not."""

from __future__ import annotations


class PixgrepError(Exception):
    """Base of pixgrep's own errors; the message is meant for the user."""


class PermanentError(PixgrepError):
    """The file itself is bad (not an image, corrupt, too large): retrying the same bytes won't help."""


class RetryableError(PixgrepError):
    """A passing condition (file vanished or locked, Milvus down): try again later."""


class StoreUnavailable(RetryableError):
    """The vector store cannot be reached."""


class BooksUnavailable(RetryableError):
    """The books' database (PostgreSQL) cannot be reached."""


class EmbeddingMismatch(PixgrepError):
    """The collection was built with another embedding model or dimension."""


class StoreLocked(StoreUnavailable):
    """Another process holds the embedded Milvus Lite data (its data-dir lock)."""


class NoIndex(PixgrepError):
    """Nothing was indexed yet under this home: there is nothing to search."""


class DiskFull(PixgrepError):
    """The file system holding ``path`` is full (or out of inodes): nothing more can be written there."""

    def __init__(self, path: str, errno_: int, detail: str = "") -> None:
        import errno
        import os

        name = errno.errorcode.get(errno_, str(errno_))
        super().__init__(
            f"no space left on {path} ({name}, errno {errno_}: {os.strerror(errno_)})"
            + (f": {detail}" if detail else "")
        )
        self.path = path
        self.errno = errno_


class AlreadyRunning(PixgrepError):
    """Another pixgrep daemon holds this index or this socket (exit 75, EX_TEMPFAIL)."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid
