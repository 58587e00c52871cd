"""What every command needs from click's context: the settings, logging, and how to die with one line."""

from __future__ import annotations

import sys
from typing import Any, NoReturn

import click
from pixgrep.settings import ConfigError, ExitCode, Settings, load_settings


def die(msg: str, code: ExitCode) -> NoReturn:
    click.echo(f"pixgrep: {msg}", err=True)
    sys.exit(int(code))


def settings(ctx: click.Context, **overrides: Any) -> Settings:
    """The one Settings object: flags > PIXGREP_ env > TOML > defaults; a bad one exits 78."""
    obj = ctx.ensure_object(dict)
    try:
        return load_settings(obj.get("config"), **{**obj.get("overrides", {}), **overrides})
    except ConfigError as e:
        die(str(e), ExitCode.CONFIG)


def setup_logging(settings: Settings, verbose: int) -> None:
    """Warnings only, unless -v (info) or -vv (debug)."""
    from pixgrep.logs import setup_logging as setup

    setup("DEBUG" if verbose > 1 else "INFO" if verbose else "WARNING", settings=settings)
