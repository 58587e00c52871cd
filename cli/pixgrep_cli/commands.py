"""What each CLI command does, as plain functions returning an exit code."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from pixgrep.settings import ExitCode, Settings

from pixgrep_cli.client import DaemonClient, DaemonError, DaemonUnavailable, ask_daemon
from pixgrep_cli.show import Show, show_results


def _err(msg: str) -> None:
    click.echo(f"pixgrep: {msg}", err=True)


def _local_index(settings: Settings, **kw: Any) -> Any:
    """Open the index in this process; errors become one line and an exit code."""
    from pixgrep.app import Index
    from pixgrep.errors import EmbeddingMismatch, StoreUnavailable

    try:
        return Index(settings, **kw)
    except (StoreUnavailable, EmbeddingMismatch) as e:
        _err(str(e))
        sys.exit(int(ExitCode.UNAVAILABLE))


def _bar_size() -> dict[str, Any]:
    # A pseudo-terminal without a size (script, some container execs) reports 0x0, and
    # tqdm then hides the bar as "below the last row": fall back to a fixed size there.
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
    except (OSError, ValueError):
        return {}
    return {"dynamic_ncols": True} if size.columns and size.lines else {"ncols": 80, "nrows": 24}


def _missing(paths: list[str]) -> bool:
    """Say which paths don't exist; refused before anything is indexed or sent, daemon or not."""
    missing = [p for p in paths if not os.path.lexists(p)]
    for p in missing:
        _err(f"{p}: no such file or folder")
    return bool(missing)


def run_index(settings: Settings, *, paths: list[str], force: bool) -> int:
    from pixgrep.app import index_paths
    from pixgrep.errors import EmbeddingMismatch, PixgrepError
    from pixgrep.stages import BackendUnavailable
    from tqdm import tqdm

    if _missing(paths):
        return int(ExitCode.NOINPUT)
    try:
        res = ask_daemon(
            settings.socket_path, "POST", "/v1/index", {"paths": [os.path.abspath(p) for p in paths], "force": force}
        )
    except DaemonError as e:
        _err(str(e))
        return int(ExitCode.FAILURE)
    if res is not None:
        click.echo(f"queued {res.get('queued', 0)} files with the running daemon; `pixgrep status` shows progress")
        return 0
    try:
        index = _local_index(settings)
        with index:
            bar = tqdm(total=0, unit="img", disable=None, file=sys.stderr, **_bar_size())

            def on_total(n: int) -> None:
                bar.total = n
                bar.refresh()

            def on_outcome(_o: object) -> None:
                bar.update(1)

            try:
                report = index_paths(index, paths, force=force, on_total=on_total, on_outcome=on_outcome)
            finally:
                bar.close()
    except Exception as e:
        from pixgrep.diskfull import classify

        full = classify(e, settings.home)
        if full is not None:
            # One line naming the path and errno (issue 9, defect 6); what was written stays consistent.
            _err(str(full))
            return int(ExitCode.IOERR)
        if not isinstance(e, (BackendUnavailable, EmbeddingMismatch, PixgrepError)):
            raise
        _err(str(e))
        return int(ExitCode.UNAVAILABLE if "Milvus" in str(e) else ExitCode.CONFIG)
    return _index_summary(report)


def _index_summary(report: Any) -> int:
    """The run's one summary line, the store outage once, then up to 10 other failures; the exit code."""
    rate = (report.indexed / report.seconds) if report.seconds else 0.0
    click.echo(
        f"{report.seen} files: {report.indexed} indexed, {report.linked} duplicates/moves linked, "
        f"{report.unchanged} unchanged, {report.failed} failed, {report.retry} to retry, "
        f"{report.removed} removed ({report.seconds:.1f}s, {rate:.1f} img/s)"
    )
    store_down = [e for _, e in report.errors if e.startswith("Milvus")]
    cause = store_down[0] if store_down else report.store_error
    if cause:
        # A store outage is one cause, not N failures: say it once (issue 9, defect 9).
        waiting = f"{len(store_down)} files wait for the vector store: " if store_down else ""
        _err(f"{waiting}{cause}; run `pixgrep index` again when it is up")
    others = [(p, e) for p, e in report.errors if not e.startswith("Milvus")]
    for path, error in others[:10]:
        click.echo(f"  {path}: {error}", err=True)
    if len(others) > 10:
        click.echo(f"  … and {len(others) - 10} more: `pixgrep status --failed`", err=True)
    return int(ExitCode.UNAVAILABLE) if cause else 0


def _search_problem(query: str, limit: int | None, montage: str | None) -> str | None:
    """Why the search is refused before it is sent anywhere (the same with and without the daemon)."""
    from pixgrep.limits import limit_problem, query_problem

    problem = query_problem(query) or limit_problem(limit)
    if montage and not problem:
        from pixgrep.montage import output_problem

        problem = output_problem(Path(montage))
    return problem


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


def run_search(
    settings: Settings,
    *,
    query: str,
    limit: int | None = None,
    as_json: bool = False,
    in_dir: str | None = None,
    mode: str | None = None,
    montage: str | None = None,
    paths: bool = False,
    nul: bool = False,
    open_n: int | None = None,
    preview: bool = False,
    explain: bool = False,
    show_all: bool = False,
    since: str | None = None,
    until: str | None = None,
    types: tuple[str, ...] = (),
    source: str | None = None,
) -> int:
    from pixgrep.results import filters_from

    problem = _search_problem(query, limit, montage)
    if problem:
        _err(problem)  # before sending it anywhere: the same answer with and without the daemon
        return int(ExitCode.USAGE)
    try:
        f = filters_from(since=since, until=until, types=types, source=source, in_dir=in_dir)
    except ValueError as e:
        _err(str(e))
        return int(ExitCode.USAGE)
    extra: dict[str, Any] = {
        "all": show_all,
        "since": f.since,
        "until": f.until,
        "types": sorted(f.types),
        "source": f.source,
    }
    in_dir = os.path.abspath(in_dir) if in_dir else None
    quiet = as_json or paths or nul
    results = _search(settings, query, limit=limit, mode=mode, in_dir=in_dir, extra=extra, quiet=quiet)
    if isinstance(results, int):
        return results
    show = Show(as_json=as_json, paths=paths, nul=nul, open_n=open_n, preview=preview, explain=explain, all=show_all)
    code = show_results(results, show)
    if montage and results and not _write_montage(results, Path(montage)):
        return int(ExitCode.CANTCREAT)
    return code


def run_similar(
    settings: Settings,
    *,
    image: str,
    limit: int | None = None,
    as_json: bool = False,
    paths: bool = False,
    nul: bool = False,
    open_n: int | None = None,
    preview: bool = False,
    explain: bool = False,
) -> int:
    from pixgrep.limits import limit_problem

    problem = limit_problem(limit)
    if problem:
        _err(problem)
        return int(ExitCode.USAGE)
    path = os.path.abspath(image)
    if not os.path.isfile(path):
        _err(f"{image}: no such file")
        return int(ExitCode.USAGE)
    results: list[dict[str, Any]]
    client = DaemonClient.connect(settings.socket_path)
    try:
        if client is not None:
            results = list(client.request("POST", "/v1/similar", json={"path": path, "limit": limit})["results"])
        else:
            results = _similar_here(settings, path, limit)
    except (DaemonError, DaemonUnavailable) as e:
        _err(str(e))
        return int(ExitCode.USAGE if isinstance(e, DaemonError) and e.status == 400 else ExitCode.UNAVAILABLE)
    except ValueError as e:
        _err(str(e))
        return int(ExitCode.FAILURE)
    finally:
        if client is not None:
            client.close()
    show = Show(as_json=as_json, paths=paths, nul=nul, open_n=open_n, preview=preview, explain=explain, all=True)
    return show_results(results, show)


def _similar_here(settings: Settings, path: str, limit: int | None) -> list[dict[str, Any]]:
    from pixgrep.backend import LocalBackend
    from pixgrep.errors import PixgrepError

    if not settings.db_path.exists():
        raise ValueError(f"no index at {settings.home} yet: run `pixgrep index DIR` or `pixgrep watch DIR` first")
    with LocalBackend(settings) as backend:
        try:
            return backend.similar(path, limit=limit)
        except PixgrepError as e:
            raise ValueError(str(e)) from None


def _search(
    settings: Settings,
    query: str,
    *,
    limit: int | None,
    mode: str | None,
    in_dir: str | None,
    extra: dict[str, Any],
    quiet: bool,
) -> list[dict[str, Any]] | int:
    """Results through the daemon, else from the index in this process; an exit code on failure."""
    client = DaemonClient.connect(settings.socket_path)
    if client is not None:
        try:
            return client.search(query, limit=limit, mode=mode, in_dir=in_dir, **extra)
        except (DaemonError, DaemonUnavailable) as e:
            _err(str(e))
            refused = isinstance(e, DaemonError) and e.status == 400
            return int(ExitCode.USAGE if refused else ExitCode.UNAVAILABLE)
        finally:
            client.close()
    if not quiet:
        _err("no daemon running; searching the index directly")
    if not settings.db_path.exists():
        _err(f"no index at {settings.home} yet: run `pixgrep index DIR` or `pixgrep watch DIR` first")
        return int(ExitCode.FAILURE)
    index = _local_index(settings, ocr_workers=0, search_only=True)
    with index:
        from pixgrep.errors import PixgrepError
        from pixgrep.results import search_json

        try:
            return search_json(index, query, limit=limit, mode=mode, in_dir=in_dir, **extra)
        except PixgrepError as e:
            _err(str(e))
            return int(ExitCode.UNAVAILABLE)


def run_status(settings: Settings, *, failed: bool, as_json: bool) -> int:
    client = DaemonClient.connect(settings.socket_path)
    info: dict[str, Any]
    if client is not None:
        try:
            info = client.status(failed=failed)
        finally:
            client.close()
        info["daemon"] = info.get("daemon") or {"running": True}
    else:
        if not settings.db_path.exists():
            info = {"counts": {}, "roots": [], "home": str(settings.home)}
        else:
            from pixgrep.app import status
            from pixgrep.catalog import Catalog

            db = Catalog(settings.db_path)
            try:
                info = status(db, settings, failed=failed)
            finally:
                db.close()
        info["daemon"] = {"running": False}
        info["watched"] = [str(f.path) for f in settings.watch.folders]
    if as_json:
        click.echo(json.dumps(info, ensure_ascii=False, indent=2))
        return 0
    d = info.get("daemon", {})
    click.echo(
        f"daemon:   {'running' if d.get('running') else 'not running'}" + (f" (pid {d['pid']})" if d.get("pid") else "")
    )
    click.echo(f"home:     {info.get('home')}")
    for key in ("watched", "roots"):
        for p in info.get(key) or []:
            click.echo(f"{key + ':':9} {p}")
    c = info.get("counts", {})
    click.echo(
        f"indexed:  {c.get('indexed', 0)} images ({c.get('paths', 0)} paths), pending {c.get('pending', 0) + c.get('queue_pending', 0)}, "
        f"failed {c.get('failed', 0) + c.get('queue_failed', 0)}"
    )
    if d.get("images_per_second") is not None:
        click.echo(f"rate:     {d['images_per_second']:.2f} images/s")
    _print_errors(d.get("last_errors") or [], info.get("failures", []) if failed else [])
    return 0


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
    from pixgrep.app import reindex
    from pixgrep.errors import PixgrepError
    from pixgrep.stages import BackendUnavailable

    body = {"stale": stale, "embeddings": embeddings, "all": everything}
    try:
        res = ask_daemon(settings.socket_path, "POST", "/v1/reindex", body, timeout=None)
    except DaemonError as e:
        _err(str(e))
        return int(ExitCode.FAILURE)
    if res is not None:
        click.echo(json.dumps(res, ensure_ascii=False))
        return 0
    from pixgrep.app import Index

    try:
        with Index(settings) as index:
            r = reindex(index, stale=stale, embeddings=embeddings, everything=everything)
    except (BackendUnavailable, PixgrepError) as e:
        _err(str(e))
        return int(ExitCode.UNAVAILABLE)
    click.echo(f"re-ran OCR on {r.ocr}, captions on {r.caption}, embeddings on {r.embed} images; {r.failed} failed")
    return 0
