"""Input limits shared by the CLI, the daemon's API and the library (standard library only).

A 1 MB query took 49 s and 6 GB in the daemon, a 50 MB one tried to allocate
125 GiB (issue 9, defect 5): queries are capped in characters and API request
bodies in bytes. The CLI checks the same limits before it sends anything, so
``pixgrep search`` answers the same way through the daemon and on the index.
"""

from __future__ import annotations

MAX_QUERY_CHARS = 1000
# Room for `pixgrep index` with a few thousand paths; nothing we accept needs more.
MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_LIMIT = 1000  # results a search may ask for
MODES = ("hybrid", "semantic", "keyword")  # how a search ranks: both legs fused, or one of them


def query_problem(query: str) -> str | None:
    """Why ``query`` is refused, in one line, or None."""
    if len(query) > MAX_QUERY_CHARS:
        return f"the query is {len(query)} characters long; the limit is {MAX_QUERY_CHARS}"
    return None


def limit_problem(limit: int | None) -> str | None:
    """Why a result count is refused, in one line, or None (None means the configured default)."""
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        return f"-k/--limit must be between 1 and {MAX_LIMIT}, not {limit}"
    return None


class QueryRefused(ValueError):
    """A search argument over the limits above; the message is for the user."""


def check_search(query: str, limit: int | None) -> None:
    """Raise QueryRefused when ``query`` or ``limit`` is over the limits."""
    problem = query_problem(query) or limit_problem(limit)
    if problem:
        raise QueryRefused(problem)
