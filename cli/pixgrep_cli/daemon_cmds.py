"""``pixgrep daemon``, ``pixgrep watch`` and ``pixgrep unwatch``."""

from __future__ import annotations

import os
import sys
from typing import Any

import click
from pixgrep.settings import ConfigError, ExitCode, Settings, load_settings


def _err(msg: str) -> None:
    click.echo(f"pixgrep: {msg}", err=True)


def _settings(ctx: click.Context) -> Settings:
    from pixgrep_cli.main import _settings as load

    return load(ctx)


@click.command("daemon")
@click.option("--workers", type=int, default=None, help="OCR processes (default: ocr.workers, 0 = one per core).")
@click.pass_context
def daemon_cmd(ctx: click.Context, workers: int | None) -> None:
    """Run the indexing service in the foreground (what systemd runs).

    Watches the configured folders, indexes what changes and answers the CLI's
    searches over a Unix socket. SIGTERM stops it cleanly, SIGHUP reloads the config.
    """
    from pixgrep.logs import setup_logging
    from pixgrep.service.supervisor import run_daemon

    obj = ctx.ensure_object(dict)
    s = _settings(ctx)
    verbose = obj.get("verbose", 0)
    setup_logging("DEBUG" if verbose else s.log_level, settings=s)

    def reload() -> Settings:
        return load_settings(obj.get("config"), **obj.get("overrides", {}))

    sys.exit(run_daemon(s, reload_settings=reload, ocr_workers=workers))


def _live(settings: Settings, method: str, url: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """Ask a running daemon; None if none runs."""
    from pixgrep_cli.client import DaemonError, ask_daemon

    try:
        return ask_daemon(settings.socket_path, method, url, body)
    except DaemonError as e:
        _err(f"the daemon refused: {e}")
        sys.exit(int(ExitCode.FAILURE))


@click.command("watch")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--polling", is_flag=True, help="Poll instead of inotify (NFS, SMB and other network mounts).")
@click.pass_context
def watch_cmd(ctx: click.Context, path: str, polling: bool) -> None:
    """Watch a folder: index it now and whatever changes in it later."""
    from pixgrep_cli.watchlist import add_folder

    s = _settings(ctx)
    folder = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(folder):
        _err(f"{folder} is not a folder")
        sys.exit(int(ExitCode.USAGE))
    try:
        changed = add_folder(s.config_file, folder, polling=polling)
    except (OSError, ValueError) as e:
        _err(f"cannot update {s.config_file}: {e}")
        sys.exit(int(ExitCode.CONFIG))
    if changed:
        click.echo(f"added {folder} to {s.config_file}")
    live = _live(s, "POST", "/v1/watch", {"path": folder, "polling": polling})
    if live is not None:
        click.echo(f"the daemon is watching {folder} ({live.get('mode', '?')}) and indexing it now")
    else:
        click.echo(f"watching {folder} once the daemon runs: `pixgrep daemon`, or `pixgrep service install`")


@click.command("unwatch")
@click.argument("path", type=click.Path(file_okay=False))
@click.option(
    "--forget", is_flag=True, help="Also remove its images from the index (not those of folders still watched)."
)
@click.pass_context
def unwatch_cmd(ctx: click.Context, path: str, forget: bool) -> None:
    """Stop watching a folder (its images stay searchable unless --forget)."""
    from pixgrep_cli.watchlist import remove_folder

    s = _settings(ctx)
    folder = os.path.abspath(os.path.expanduser(path))
    what = _forget_plan(s, folder) if forget else None  # refused before anything changes
    try:
        changed = remove_folder(s.config_file, folder)
    except (OSError, ValueError) as e:
        _err(f"cannot update {s.config_file}: {e}")
        sys.exit(int(ExitCode.CONFIG))
    if changed:
        click.echo(f"removed {folder} from {s.config_file}")
    live = _live(s, "POST", "/v1/unwatch", {"path": folder, "forget": forget})
    was_watched = changed or bool(live and live.get("was_watched"))
    if what is None:
        if not was_watched:
            _err(f"{folder} was not watched")
            sys.exit(int(ExitCode.FAILURE))
        if live is not None:
            click.echo(f"the daemon stopped watching {folder}")
        return
    sys.exit(_report_forget(s, what, live, was_watched=was_watched))


def _forget_plan(settings: Settings, folder: str) -> Any:
    from pixgrep.forget import ForgetRefused, plan

    try:
        return plan(folder, [str(f.path) for f in settings.watch.folders])
    except ForgetRefused as e:
        _err(str(e))
        sys.exit(int(ExitCode.FAILURE))


def _report_forget(settings: Settings, what: Any, live: dict[str, Any] | None, *, was_watched: bool) -> int:
    from pixgrep.forget import summary

    if live is not None:
        forgotten, kept = int(live.get("forgotten", 0)), list(live.get("kept", []))
    else:
        forgotten, kept = _forget_locally(settings, what), what.keep
    click.echo(summary(what.path, was_watched=was_watched, forgotten=forgotten, kept=kept))
    return int(ExitCode.FAILURE) if not was_watched and not forgotten else 0


def _forget_locally(settings: Settings, what: Any) -> int:
    from pixgrep.app import Index
    from pixgrep.errors import PixgrepError
    from pixgrep.forget import forget

    try:
        with Index(settings, ocr_workers=0) as index:
            n = forget(index.pipeline, what)
            index.pipeline.store.flush()
    except (PixgrepError, ConfigError) as e:
        _err(str(e))
        sys.exit(int(ExitCode.UNAVAILABLE))
    return n


COMMANDS = (daemon_cmd, watch_cmd, unwatch_cmd)
