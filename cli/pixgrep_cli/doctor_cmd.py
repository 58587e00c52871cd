"""``pixgrep doctor [--repair] [--json]``: is the index consistent and private? (``pixgrep.doctor``)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click
from pixgrep.settings import ConfigError, ExitCode, Settings


def run_doctor(settings: Settings, *, repair: bool, as_json: bool) -> int:
    """Print what is wrong (and what --repair did); 0 when nothing is (left), 1 otherwise."""
    from pixgrep.doctor import diagnose
    from pixgrep.errors import AlreadyRunning, PixgrepError

    try:
        report = diagnose(settings, repair=repair)
    except AlreadyRunning as e:
        click.echo(f"pixgrep: {e}", err=True)
        return int(ExitCode.TEMPFAIL)
    except (PixgrepError, ConfigError) as e:
        click.echo(f"pixgrep: {e}", err=True)
        return int(ExitCode.CONFIG if isinstance(e, ConfigError) else ExitCode.UNAVAILABLE)
    if as_json:
        click.echo(json.dumps(report.to_json(), ensure_ascii=False))
    else:
        _print_report(report)
    return 0 if report.clean else 1


def _print_report(report: Any) -> None:
    for p in report.found:
        click.echo(str(p))
    for line in report.repaired:
        click.echo(f"repaired: {line}")
    for p in report.remaining or []:
        click.echo(f"left: {p}")
    left = report.found if report.remaining is None else report.remaining
    counts = ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
    verdict = "no problems" if not left else f"{len(left)} problem{'s' if len(left) != 1 else ''}"
    click.echo(f"{verdict} ({counts})" if counts else verdict)


@click.command("doctor")
@click.option("--repair", is_flag=True, help="Fix what can be fixed without OCR, then check again.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def doctor(ctx: click.Context, repair: bool, as_json: bool) -> None:
    """Check the books against Milvus and the local index, and the state's permissions.

    Exit status: 0 when nothing is wrong (with --repair: nothing is left), 1 when problems were found (are left).
    """
    from pixgrep_cli.ctx import settings, setup_logging

    s = settings(ctx)
    setup_logging(s, ctx.obj["verbose"])
    sys.exit(run_doctor(s, repair=repair, as_json=as_json))
