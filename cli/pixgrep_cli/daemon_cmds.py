"""``pixgrep daemon``, ``pixgrep watch`` and ``pixgrep unwatch``."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click
from pixgrep.settings import ExitCode, Settings, load_settings

from pixgrep_cli.ctx import settings

if TYPE_CHECKING:
    from pixgrep.backend import Backend


def _err(msg: str) -> None:
    click.echo(f"pixgrep: {msg}", err=True)


def _settings(ctx: click.Context) -> Settings:
    return settings(ctx)


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


def _live_call(settings: Settings, op: Callable[[Backend], dict[str, Any]]) -> tuple[bool, dict[str, Any]]:
    """Run ``op`` on the backend (the daemon, else the index here); (whether a daemon answered, its answer)."""
    from pixgrep_cli.commands import open_backend, report_error

    backend = open_backend(settings, announce=False)
    try:
        return backend.live, op(backend)
    except Exception as e:
        sys.exit(report_error(e, settings))
    finally:
        backend.close()


def _watch_in_config(s: Settings, folder: str, *, polling: bool, root_name: str | None) -> None:
    """Add the folder (and its name) to the config file, the part that lasts; exits on failure."""
    from pixgrep.roots import BadRootName

    from pixgrep_cli.watchlist import add_folder, name_root

    try:
        if root_name is not None:
            try:
                named = name_root(s.config_file, root_name, folder)
            except BadRootName as e:  # a bad name or a clash with the config's names: the user's to fix
                _err(f"cannot name {folder}: {e}")
                sys.exit(int(ExitCode.USAGE))
            if named:
                click.echo(f"named {folder} {root_name.lower()!r} in {s.config_file}")
        changed = add_folder(s.config_file, folder, polling=polling)
    except (OSError, ValueError) as e:
        _err(f"cannot update {s.config_file}: {e}")
        sys.exit(int(ExitCode.CONFIG))
    if changed:
        click.echo(f"added {folder} to {s.config_file}")


@click.command("watch")
@click.argument("path", type=click.Path(file_okay=False))
@click.option("--polling", is_flag=True, help="Poll instead of inotify (NFS, SMB and other network mounts).")
@click.option(
    "--name",
    "root_name",
    metavar="NAME",
    help="Name the folder (a shared archive): its images are the same items on every host that names its "
    "own mount of it so ([roots] in the config).",
)
@click.pass_context
def watch_cmd(ctx: click.Context, path: str, polling: bool, root_name: str | None) -> None:
    """Watch a folder: index it now and whatever changes in it later."""
    s = _settings(ctx)
    folder = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(folder):
        _err(f"{folder} is not a folder")
        sys.exit(int(ExitCode.USAGE))
    _watch_in_config(s, folder, polling=polling, root_name=root_name)
    live, res = _live_call(s, lambda b: b.watch(folder, polling=polling))
    if live:
        click.echo(f"the daemon is watching {folder} ({res.get('mode', '?')}) and indexing it now")
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
    from pixgrep.forget import ForgetRefused, plan, summary

    from pixgrep_cli.watchlist import remove_folder

    s = _settings(ctx)
    folder = os.path.abspath(os.path.expanduser(path))
    if forget:
        try:  # refused before anything changes
            plan(folder, [str(f.path) for f in s.watch.folders])
        except ForgetRefused as e:
            _err(str(e))
            sys.exit(int(ExitCode.FAILURE))
    try:
        changed = remove_folder(s.config_file, folder)
    except (OSError, ValueError) as e:
        _err(f"cannot update {s.config_file}: {e}")
        sys.exit(int(ExitCode.CONFIG))
    if changed:
        click.echo(f"removed {folder} from {s.config_file}")
    # The daemon, else the index here (which forgets with the config's folders as they were).
    live, res = _live_call(s, lambda b: b.unwatch(folder, forget=forget))
    was_watched = changed or bool(res.get("was_watched"))
    if not forget:
        if not was_watched:
            _err(f"{folder} was not watched")
            sys.exit(int(ExitCode.FAILURE))
        if live:
            click.echo(f"the daemon stopped watching {folder}")
        return
    forgotten = int(res.get("forgotten", 0))
    click.echo(summary(folder, was_watched=was_watched, forgotten=forgotten, kept=list(res.get("kept", []))))
    if not was_watched and not forgotten:
        sys.exit(int(ExitCode.FAILURE))


COMMANDS = (daemon_cmd, watch_cmd, unwatch_cmd)
