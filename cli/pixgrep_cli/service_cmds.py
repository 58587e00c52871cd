"""``pixgrep service``: install the daemon as a systemd service."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click
from pixgrep.settings import ExitCode


@click.group("service")
def service() -> None:
    """Run the daemon as a systemd service."""


@service.command("install")
@click.option(
    "--user",
    "user_scope",
    is_flag=True,
    help="A user service (systemctl --user) indexing into your own ~/.local/state/pixgrep.",
)
@click.option(
    "--now/--no-start",
    "start",
    default=True,
    show_default=True,
    help="Start (or restart) the service after enabling it.",
)
@click.option("--no-enable", is_flag=True, help="Only write the unit file: no systemctl, no systemd-sysusers.")
@click.option("--print", "print_only", is_flag=True, help="Print the unit and change nothing.")
@click.option(
    "--unit-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Write the unit here instead of /etc/systemd/system or ~/.config/systemd/user.",
)
def install_cmd(user_scope: bool, start: bool, no_enable: bool, print_only: bool, unit_dir: Path | None) -> None:
    """Write the pixgrep.service unit, running this pixgrep, and enable it.

    The system service runs as the `pixgrep` user (created with systemd-sysusers),
    reads /etc/pixgrep/config.toml, keeps its index in /var/lib/pixgrep and
    serves /run/pixgrep/api.sock. The user service (--user) shares your CLI's
    config and index.
    """
    from pixgrep_cli import units

    scope: units.Scope = "user" if user_scope else "system"
    if print_only:
        click.echo(units.render(scope), nl=False)
        return
    try:
        report = units.install(scope, unit_dir=unit_dir, enable=not no_enable, start=start)
    except units.InstallError as e:
        click.echo(f"pixgrep: {e}", err=True)
        sys.exit(int(ExitCode.FAILURE))
    for path in report.written:
        click.echo(f"wrote {path}")
    for argv in report.commands:
        click.echo(f"ran   {shlex.join(argv)}")
    for hint in report.hints:
        click.echo(hint, err=hint.startswith("warning"))
    if scope == "system" and not no_enable:
        click.echo(
            "watch a folder: sudo XDG_CONFIG_HOME=/etc XDG_RUNTIME_DIR=/run pixgrep watch DIR\n"
            "the pixgrep user needs to read it, e.g. setfacl -R -m u:pixgrep:rX DIR (and x on its parents)\n"
            "search the same way: sudo XDG_CONFIG_HOME=/etc XDG_RUNTIME_DIR=/run pixgrep search WORDS\n"
            "logs: journalctl -u pixgrep"
        )


@service.command("uninstall")
@click.option("--user", "user_scope", is_flag=True, help="The user service.")
@click.option("--unit-dir", type=click.Path(file_okay=False, path_type=Path), default=None)
def uninstall_cmd(user_scope: bool, unit_dir: Path | None) -> None:
    """Stop and disable the service and remove its unit; the index is kept."""
    from pixgrep_cli import units

    try:
        report = units.uninstall("user" if user_scope else "system", unit_dir=unit_dir)
    except units.InstallError as e:
        click.echo(f"pixgrep: {e}", err=True)
        sys.exit(int(ExitCode.FAILURE))
    if not report.commands:
        click.echo(f"{report.unit_path} is not installed")
    for argv in report.commands:
        click.echo(f"ran   {shlex.join(argv)}")
