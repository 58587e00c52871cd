"""``pixgrep search`` through a running daemon with the standard library only.

The full CLI spends 250-400 ms importing click and pydantic-settings before
it sends one request; a search answered by the warm daemon takes tens
of milliseconds. This path finds the socket with the same precedence as
Settings (``PIXGREP_DAEMON__SOCKET``, then ``[daemon] socket`` in the config
file, then ``$XDG_RUNTIME_DIR/pixgrep/api.sock``), sends the search with the
CLI's one daemon client (``RemoteBackend``), and prints
exactly what ``commands.run_search`` prints. Whenever it is unsure (other
flags, no daemon, an odd config) it returns None and the full CLI takes over.
"""

from __future__ import annotations

import json
import os
import sys

from pixgrep.limits import MODES, limit_problem, query_problem

# Neither typing nor pathlib here: importing them costs 5-15 ms, a good part of what the daemon
# takes to search. mypy reads any name TYPE_CHECKING as True.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

UNAVAILABLE = 69  # ExitCode.UNAVAILABLE, without importing pixgrep.settings
USAGE = 64  # ExitCode.USAGE

_VALUE_OPTS = {"-k": "limit", "--limit": "limit", "--in": "in_dir", "--mode": "mode"}


def _global_opts(argv: list[str]) -> tuple[str | None, int] | None:
    """(the --config file, the index of ``search``) when only --config comes before it; else None."""
    config: str | None = None
    i = 0
    while i < len(argv) and argv[i] != "search":
        a = argv[i]
        if a == "--config" and i + 1 < len(argv):
            config = argv[i + 1]
            i += 2
        elif a.startswith("--config="):
            config = a.split("=", 1)[1]
            i += 1
        else:
            return None  # --home, -v and anything else: the full CLI
    return (config, i) if i < len(argv) else None


def _search_opts(rest: list[str]) -> tuple[dict[str, Any], list[str]] | None:
    """(options as given, query words) for the flags this path knows; None for any other flag."""
    opts: dict[str, Any] = {"limit": None, "json": False, "in_dir": None, "mode": None}
    words: list[str] = []
    j = 0
    while j < len(rest):
        a = rest[j]
        if a in _VALUE_OPTS and j + 1 < len(rest):
            opts[_VALUE_OPTS[a]] = rest[j + 1]
            j += 2
            continue
        if a.startswith(("--limit=", "--in=", "--mode=")):
            k, v = a[2:].split("=", 1)
            opts["in_dir" if k == "in" else k] = v
        elif a == "--json":
            opts["json"] = True
        elif a.startswith("-"):
            return None  # --montage, --help, "--", negative numbers...: the full CLI
        else:
            words.append(a)
        j += 1
    return opts, words


def parse_search(argv: list[str]) -> tuple[str | None, dict[str, Any]] | None:
    """(config file, search arguments) for the plain forms of ``pixgrep [--config F] search ...``."""
    head = _global_opts(argv)
    if head is None:
        return None
    config, i = head
    parsed = _search_opts(argv[i + 1 :])
    if parsed is None or not parsed[1]:
        return None
    opts, words = parsed
    try:
        if opts["limit"] is not None:
            opts["limit"] = int(opts["limit"])
    except ValueError:
        return None
    if opts["mode"] is not None and opts["mode"] not in MODES:
        return None
    if opts["in_dir"] is not None and ":" in opts["in_dir"]:
        return None  # maybe a named root's key (--in nas:/sub): pixgrep.roots, in the full CLI, decides
    opts["query"] = " ".join(words)
    return config, opts


def socket_path(config: str | None, env: dict[str, str] | os._Environ[str] = os.environ) -> str | None:
    """The daemon's socket as Settings would resolve it, or None if that needs the full settings."""
    # The JSON form of the section, or a spelling other than ours (env names are case-insensitive).
    if any(k.upper() in ("PIXGREP_DAEMON", "PIXGREP_DAEMON__SOCKET") and k != "PIXGREP_DAEMON__SOCKET" for k in env):
        return None
    if env.get("PIXGREP_DAEMON__SOCKET"):
        return env["PIXGREP_DAEMON__SOCKET"]
    explicit = config or env.get("PIXGREP_CONFIG_FILE")
    if explicit:
        cfg = os.path.expanduser(explicit)
    else:
        xdg = env.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
        cfg = os.path.join(xdg, "pixgrep", "config.toml")
    if os.path.exists(cfg):
        import tomllib

        try:
            with open(cfg, "rb") as fh:
                doc = tomllib.load(fh)
        except (OSError, ValueError):
            return None  # the full CLI reports the error
        daemon = doc.get("daemon", {})
        if not isinstance(daemon, dict):
            return None
        if daemon.get("socket"):
            return str(daemon["socket"])
    elif explicit:
        return None
    runtime = env.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime, "pixgrep") if runtime else f"/tmp/pixgrep-{os.getuid()}"
    return os.path.join(base, "api.sock")


def _style(text: str, code: str) -> str:
    return f"\x1b[{code}m{text}\x1b[0m"


def _highlight(snippet: str, spans: list[list[int]], color: bool) -> str:
    if not color or not spans:
        return snippet
    out, last = [], 0
    for s, e in spans:
        out.append(snippet[last:s])
        out.append(f"\x1b[31m\x1b[1m{snippet[s:e]}\x1b[0m")
        last = e
    out.append(snippet[last:])
    return "".join(out)


def _out(line: str) -> None:
    # File names that aren't UTF-8 come out as their original bytes, like ls prints them.
    sys.stdout.buffer.write((line + "\n").encode(sys.stdout.encoding or "utf-8", "surrogateescape"))


def _json_line(obj: dict[str, Any]) -> str:
    text = json.dumps(obj, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A non-UTF-8 file name: \udcXX escapes keep the JSON valid and the bytes recoverable (os.fsencode).
        text = json.dumps(obj)
    return text


def _err(msg: str) -> None:
    sys.stderr.write(f"pixgrep: {msg}\n")


def search(argv: list[str]) -> int | None:
    """Run ``pixgrep search`` via the daemon and return the exit code; None to use the full CLI."""
    parsed = parse_search(argv)
    if parsed is None:
        return None
    config, o = parsed
    problem = query_problem(o["query"]) or limit_problem(o["limit"])
    if problem:
        _err(problem)  # before sending anything, as the full CLI does
        return USAGE
    path = socket_path(config)
    if path is None or not os.path.exists(path):
        return None
    from pixgrep_cli.remote import DaemonError, DaemonUnavailable, RemoteBackend

    try:
        results = RemoteBackend(path).search_body(request_body(o))
    except DaemonUnavailable:
        return None  # a stale socket: the full CLI searches the index itself
    except DaemonError as e:
        _err(str(e))
        return USAGE if e.status == 400 else UNAVAILABLE
    print_results(results, as_json=o["json"])
    return 0 if results else 1


def request_body(o: dict[str, Any]) -> dict[str, Any]:
    """``SearchRequest.to_json()`` of the plain search ``o`` (checked by ``search``), written here without
    importing ``pixgrep.request``: its dataclass costs 10-15 ms on this path (a test keeps the two equal)."""
    in_dir = os.path.abspath(o["in_dir"]) if o["in_dir"] else None
    return {"query": o["query"], "limit": o["limit"], "mode": o["mode"], "in_dir": in_dir}


def print_results(results: list[dict[str, Any]], *, as_json: bool) -> None:
    """Print search results as the CLI does, daemon or not (the full CLI calls this too)."""
    if as_json:
        for r in results:
            _out(_json_line({k: r[k] for k in ("path", "score", "source", "text")}))
    else:
        color = sys.stdout.isatty()
        if not results:
            _err("no good match (--all shows the nearest anyway)")
        for r in results:
            p = _style(r["path"], "35") if color else r["path"]
            snippet = _highlight(r.get("snippet", ""), r.get("spans", []), color)
            _out(f"{p}\t{r['score']:.4f}\t{r['source']}\t{snippet}")
    sys.stdout.flush()
