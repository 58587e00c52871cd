"""What each CLI command does, as plain functions returning an exit code."""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from pixgrep.settings import ExitCode, Settings

from pixgrep_cli.show import Show, show_results

if TYPE_CHECKING:
    from pixgrep.backend import Backend
    from pixgrep.request import SearchRequest


def _err(msg: str) -> None:
    click.echo(f"pixgrep: {msg}", err=True)


def open_backend(settings: Settings, *, announce: bool = True) -> Backend:
    """The running daemon if one answers, else the index in this process (saying so when ``announce``)."""
    from pixgrep_cli.remote import RemoteBackend

    remote = RemoteBackend.connect(settings.socket_path)
    if remote is not None:
        return remote
    if announce:
        _err("no daemon running; using the index directly")
    from pixgrep.backend import LocalBackend

    return LocalBackend(settings)


def report_error(e: Exception, settings: Settings, *, refused: ExitCode = ExitCode.FAILURE) -> int:
    """Print what a backend raised as one line and return its exit code; re-raise a bug.

    ``refused``: the code when the daemon answered with an error (400, a bad request, is always USAGE).
    """
    from pixgrep.diskfull import classify
    from pixgrep.errors import EmbeddingMismatch, NoIndex, PixgrepError
    from pixgrep.settings import ConfigError
    from pixgrep.stages import BackendUnavailable

    from pixgrep_cli.remote import DaemonError

    full = classify(e, settings.home)
    if full is not None:
        # One line naming the path and errno (issue 9, defect 6); what was written stays consistent.
        _err(str(full))
        return int(ExitCode.IOERR)
    if not isinstance(e, (PixgrepError, ConfigError, BackendUnavailable, ValueError)):
        raise e
    _err(str(e))
    if isinstance(e, DaemonError):
        return int(ExitCode.USAGE if e.status == 400 else refused)
    if isinstance(e, ValueError):
        return int(ExitCode.USAGE)  # what the API answers 400 for (an image without text to be like)
    if isinstance(e, NoIndex):
        return int(ExitCode.FAILURE)
    if isinstance(e, (ConfigError, BackendUnavailable, EmbeddingMismatch)):
        return int(ExitCode.CONFIG)
    return int(ExitCode.UNAVAILABLE)  # Milvus or the daemon unreachable


def _bar_size() -> dict[str, Any]:
    # A pseudo-terminal without a size (script, some container execs) reports 0x0, and
    # tqdm then hides the bar as "below the last row": fall back to a fixed size there.
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        return {}
    return {"dynamic_ncols": True} if size.columns and size.lines else {"ncols": 80, "nrows": 24}


class _Progress:
    """A progress bar that appears once the work happens here (a daemon only queues it)."""

    def __init__(self) -> None:
        self.bar: Any = None

    def total(self, n: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=n, unit="img", disable=None, file=sys.stderr, **_bar_size())

    def step(self, _outcome: object) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _missing(paths: list[str]) -> bool:
    """Say which paths don't exist; refused before anything is indexed or sent, daemon or not."""
    missing = [p for p in paths if not os.path.lexists(p)]
    for p in missing:
        _err(f"{p}: no such file or folder")
    return bool(missing)


def _index_summary(res: dict[str, Any]) -> int:
    """The run's one summary line, the store outage once, then up to 10 other failures; the exit code."""
    if "queued" in res:
        click.echo(f"queued {res['queued']} files with the running daemon; `pixgrep status` shows progress")
        return 0
    seconds = res["seconds"]
    rate = (res["indexed"] / seconds) if seconds else 0.0
    click.echo(
        f"{res['seen']} files: {res['indexed']} indexed, {res['linked']} duplicates/moves linked, "
        f"{res['unchanged']} unchanged, {res['failed']} failed, {res['retry']} to retry, "
        f"{res['removed']} removed ({seconds:.1f}s, {rate:.1f} img/s)"
    )
    store_down = [e for _, e in res["errors"] if e.startswith("Milvus")]
    cause = store_down[0] if store_down else res.get("store_error")
    if cause:
        # A store outage is one cause, not N failures: say it once (issue 9, defect 9).
        waiting = f"{len(store_down)} files wait for the vector store: " if store_down else ""
        _err(f"{waiting}{cause}; run `pixgrep index` again when it is up")
    others = [(p, e) for p, e in res["errors"] if not e.startswith("Milvus")]
    for path, error in others[:10]:
        click.echo(f"  {path}: {error}", err=True)
    if len(others) > 10:
        click.echo(f"  … and {len(others) - 10} more: `pixgrep status --failed`", err=True)
    return int(ExitCode.UNAVAILABLE) if cause else 0


def run_index(settings: Settings, *, paths: list[str], force: bool) -> int:
    if _missing(paths):
        return int(ExitCode.NOINPUT)
    backend = open_backend(settings, announce=False)
    progress = _Progress()
    try:
        res = backend.index(
            [os.path.abspath(p) for p in paths], force=force, on_total=progress.total, on_outcome=progress.step
        )
    except Exception as e:
        return report_error(e, settings)
    finally:
        progress.close()
        backend.close()
    return _index_summary(res)


def search_request(
    query: str,
    *,
    limit: int | None = None,
    mode: str | None = None,
    in_dir: str | None = None,
    show_all: bool = False,
    since: str | None = None,
    until: str | None = None,
    types: tuple[str, ...] = (),
    source: str | None = None,
) -> SearchRequest:
    """The search the flags ask for (dates as typed, ``in_dir`` relative to here); ValueError (one line) if bad."""
    from pixgrep.filters import filters_from
    from pixgrep.request import SearchRequest

    f = filters_from(since=since, until=until, types=types, source=source, in_dir=in_dir)
    return SearchRequest.from_filters(query, f, limit=limit, mode=mode, all=show_all)


def _write_montage(results: list[dict[str, Any]], out: Path) -> bool:
    from pixgrep.errors import PixgrepError
    from pixgrep.montage import montage as make_montage

    try:
        written = make_montage(
            [r["path"] for r in results],
            out,
            labels=[f"#{i + 1} {r['score']:.3f} {os.path.basename(r['path'])}"[:36] for i, r in enumerate(results)],
        )
    except PixgrepError as e:
        _err(str(e))
        return False
    _err(f"montage written to {written}")
    return True


def run_search(settings: Settings, *, query: str, show: Show = Show(), montage: str | None = None, **flags: Any) -> int:
    """``pixgrep search``: ``flags`` are ``search_request``'s; ``show`` says how to print the results."""
    try:
        request = search_request(query, **flags)
        problem = _montage_problem(montage)
    except ValueError as e:
        problem = str(e)
    if problem:
        _err(problem)  # before sending it anywhere: the same answer with and without the daemon
        return int(ExitCode.USAGE)
    results = _search(settings, request, quiet=show.quiet)
    if isinstance(results, int):
        return results
    code = show_results(results, dataclasses.replace(show, all=request.all))
    if montage and results and not _write_montage(results, Path(montage)):
        return int(ExitCode.CANTCREAT)
    return code


def _montage_problem(montage: str | None) -> str | None:
    if not montage:
        return None
    from pixgrep.montage import output_problem

    return output_problem(Path(montage))


def run_similar(settings: Settings, *, image: str, limit: int | None = None, show: Show = Show()) -> int:
    from pixgrep.limits import limit_problem

    problem = limit_problem(limit)
    if problem:
        _err(problem)
        return int(ExitCode.USAGE)
    path = os.path.abspath(image)
    if not os.path.isfile(path):
        _err(f"{image}: no such file")
        return int(ExitCode.USAGE)
    backend = open_backend(settings, announce=not show.quiet)
    try:
        results = backend.similar(path, limit=limit)
    except Exception as e:
        return report_error(e, settings, refused=ExitCode.UNAVAILABLE)
    finally:
        backend.close()
    return show_results(results, dataclasses.replace(show, all=True))


def _search(settings: Settings, request: SearchRequest, *, quiet: bool) -> list[dict[str, Any]] | int:
    """Results through the daemon, else from the index in this process; an exit code on failure."""
    backend = open_backend(settings, announce=not quiet)
    try:
        results = backend.search(request)
    except Exception as e:
        return report_error(e, settings, refused=ExitCode.UNAVAILABLE)
    finally:
        backend.close()
    if settings.search.start_daemon and not backend.live:
        from pixgrep_cli.ondemand import start_daemon

        _err(start_daemon(settings))  # said even with --json: it is on stderr, and it starts a process
    return results


def _print_daemons(daemons: list[dict[str, Any]]) -> None:
    """One line per daemon sharing the books: host, pid, state, last heartbeat, rate."""
    if len(daemons) < 2 and all(d.get("alive") for d in daemons):
        return  # one daemon: the lines above already say it all
    for d in daemons:
        rate = d.get("images_per_second")
        click.echo(
            f"{'daemons:':9} {d['host']} pid {d['pid']} {d['state']}, beat {d['seconds_since_beat']:.0f}s ago"
            + (f", {rate:.2f} images/s" if rate is not None else "")
            + f", {d.get('indexed_since_start', 0)} indexed"
        )


def run_status(settings: Settings, *, failed: bool, as_json: bool) -> int:
    backend = open_backend(settings, announce=False)
    try:
        info = backend.status(failed=failed)
    except Exception as e:
        return report_error(e, settings)
    finally:
        backend.close()
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=2))
        return 0
    _print_status(info, failed=failed)
    return 0


def _print_status(info: dict[str, Any], *, failed: bool) -> None:
    d = info.get("daemon", {})
    click.echo(
        f"daemon:   {'running' if d.get('running') else 'not running'}" + (f" (pid {d['pid']})" if d.get("pid") else "")
    )
    click.echo(f"home:     {info.get('home')}")
    for key in ("watched", "roots"):
        for p in info.get(key) or []:
            click.echo(f"{key + ':':9} {p}")
    _print_named_roots(info.get("named_roots") or {})
    c = info.get("counts", {})
    click.echo(
        f"indexed:  {c.get('indexed', 0)} images ({c.get('paths', 0)} paths), pending {c.get('pending', 0) + c.get('queue_pending', 0)}, "
        f"failed {c.get('failed', 0) + c.get('queue_failed', 0)}"
    )
    if d.get("images_per_second") is not None:
        click.echo(f"rate:     {d['images_per_second']:.2f} images/s")
    _print_daemons(info.get("daemons", []))
    _print_errors(d.get("last_errors") or [], info.get("failures", []) if failed else [])


def _print_named_roots(named: dict[str, dict[str, str | None]]) -> None:
    """One line per named root: this host's mount point, and the other hosts'."""
    for name, where in named.items():
        others = ", ".join(f"{host} {path}" for host, path in where.items() if host != "here")
        here = where.get("here") or f"not mounted here: its files show as {name}:/…"
        click.echo(f"{'named:':9} {name} = {here}" + (f" (elsewhere: {others})" if others else ""))


def _print_errors(recent: list[str], failures: list[dict[str, Any]]) -> None:
    """The daemon's recent errors, then with --failed every failure: each one once (issue 9, defect 9)."""
    listed = {f"{f['path']}: {f['error']}" for f in failures}
    for e in recent:
        if e not in listed:
            click.echo(f"error:    {e}")
    for f in failures:
        click.echo(f"  {f['path']}: {f['error']} (attempts {f['attempts']})")


def run_models(settings: Settings, *, as_json: bool) -> int:
    from pixgrep.models import describe

    infos = describe(settings)
    # Exit 1 when a configured model is not available offline, in either output format.
    code = 0 if all(i.offline for i in infos) else 1
    if as_json:
        click.echo(json.dumps([i.to_json() for i in infos], ensure_ascii=False, indent=2))
        return code
    for i in infos:
        size = f"{i.size_bytes / 2**20:.0f} MiB" if i.size_bytes else "-"
        state = "offline ok" if i.offline else "NOT available offline"
        click.echo(
            f"{i.stage:8} {i.backend:22} {i.model}\n         {state}, {size}, {i.location}"
            + (f" ({i.note})" if i.note else "")
        )
    return code


def run_reindex(settings: Settings, *, stale: bool, embeddings: bool, everything: bool) -> int:
    backend = open_backend(settings)
    try:
        r = backend.reindex(stale=stale, embeddings=embeddings, all=everything, failed=False)
    except Exception as e:
        return report_error(e, settings)
    finally:
        backend.close()
    click.echo(
        f"re-ran OCR on {r.get('ocr', 0)}, captions on {r.get('caption', 0)}, embeddings on {r.get('embed', 0)} images; "
        f"{r.get('failed', 0)} failed"
    )
    return 0
