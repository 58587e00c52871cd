"""``pixgrep ui``: the gallery's URL (token included) from the running daemon, opened in a browser."""

from __future__ import annotations

import sys

import click
from pixgrep.settings import ExitCode, Settings

from pixgrep_cli.ctx import settings as load_settings
from pixgrep_cli.remote import DaemonError, DaemonUnavailable, RemoteBackend


def _err(msg: str) -> None:
    click.echo(f"pixgrep: {msg}", err=True)


def gallery_url(settings: Settings) -> tuple[str | None, str]:
    """(URL, '') from the running daemon, or (None, why not)."""
    remote = RemoteBackend.connect(settings.socket_path)
    if remote is None:
        return None, (
            f"the daemon is not running (no answer on {settings.socket_path}); the gallery is served by the daemon: "
            "start it with `pixgrep daemon` or `pixgrep service install --user`"
        )
    try:
        health = remote.health()
    except (DaemonError, DaemonUnavailable) as e:
        return None, f"the daemon did not answer: {e}"
    url = health.get("ui")
    if not url:
        if not settings.ui.enabled:
            return None, "the gallery is off (ui.enabled = false in the config)"
        return None, "the daemon runs without its gallery (restart it, or see `journalctl --user -u pixgrep`)"
    return str(url), ""


def run_ui(settings: Settings, *, open_browser: bool) -> int:
    url, why = gallery_url(settings)
    if url is None:
        _err(why)
        return int(ExitCode.UNAVAILABLE)
    click.echo(url)
    sys.stdout.flush()
    if open_browser:
        import webbrowser

        if not webbrowser.open(url):
            _err("no browser found: open the URL above")
    return 0


@click.command("ui")
@click.option("--no-browser", is_flag=True, help="Only print the URL.")
@click.pass_context
def ui_cmd(ctx: click.Context, no_browser: bool) -> None:
    """Open the web gallery of the running daemon (prints its URL, token included, first)."""
    sys.exit(run_ui(load_settings(ctx), open_browser=not no_browser))
