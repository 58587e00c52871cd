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


class EmbeddingMismatch(PixgrepError):
    """The collection was built with another embedding model or dimension."""


class StoreLocked(StoreUnavailable):
    """Another process holds the embedded Milvus Lite data (its data-dir lock)."""


class NoIndex(PixgrepError):
    """Nothing was indexed yet under this home: there is nothing to search."""
