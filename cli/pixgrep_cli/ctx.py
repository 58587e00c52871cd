"""What every command needs from click's context: the settings, and how to die with one line."""

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
