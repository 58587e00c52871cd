"""The ``pixgrep`` command: click parses flags, then calls plain functions."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from pixgrep_cli.ctx import settings, setup_logging
from pixgrep_cli.daemon_cmds import COMMANDS as DAEMON_COMMANDS
from pixgrep_cli.doctor_cmd import doctor
from pixgrep_cli.service_cmds import service
from pixgrep_cli.ui_cmd import ui_cmd

_settings = settings


_setup_logging = setup_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config", type=click.Path(dir_okay=False), help="TOML config file.")
@click.option("--home", type=click.Path(file_okay=False), help="State folder (PIXGREP_HOME).")
@click.option("-v", "--verbose", count=True)
@click.version_option(package_name="pixgrep")
@click.pass_context
def main(ctx: click.Context, config: str | None, home: str | None, verbose: int) -> None:
    """grep for pictures: find screenshots and memes by the text in them."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    ctx.obj["overrides"] = {"home": home}
    ctx.obj["verbose"] = verbose


# How many results and how to show them: the same flags for search and similar.
_RESULT_OPTIONS = [
    click.option("-k", "--limit", type=int, default=None, help="Number of results."),
    click.option("--json", "as_json", is_flag=True, help="JSON lines: path, score, source, text."),
    click.option("-f", "--paths", "paths", is_flag=True, help="Bare paths, one a line."),
    click.option("-0", "--null", "nul", is_flag=True, help="Bare paths separated by NUL (for xargs -0)."),
    click.option(
        "--open",
        "open_n",
        type=int,
        is_flag=False,
        flag_value=1,
        default=None,
        help="Open hit N (default 1) with xdg-open.",
    ),
    click.option("--preview", is_flag=True, help="Inline thumbnails on a terminal (chafa or textual-image)."),
    click.option("--explain", is_flag=True, help="Each leg's score and matched text, and the fused score."),
]


def _result_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The flags above on a command, which gets ``limit`` and how to show the results as ``show``."""

    @functools.wraps(f)
    def command(
        *args: Any, as_json: bool, paths: bool, nul: bool, open_n: int | None, preview: bool, explain: bool, **kw: Any
    ) -> Any:
        from pixgrep_cli.show import Show

        show = Show(as_json=as_json, paths=paths, nul=nul, open_n=open_n, preview=preview, explain=explain)
        return f(*args, show=show, **kw)

    for option in reversed(_RESULT_OPTIONS):  # the last decorator applied lists first in --help
        command = option(command)
    return command


@main.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("--force", is_flag=True, help="Re-read every file even if unchanged.")
@click.option("--workers", type=int, default=None, help="OCR processes (default: one per core).")
@click.option("--ocr", "ocr_engine", default=None, help="OCR backend: rapidocr or tesseract.")
@click.pass_context
def index_cmd(
    ctx: click.Context, paths: tuple[str, ...], force: bool, workers: int | None, ocr_engine: str | None
) -> None:
    """Index image files and folders (incremental)."""
    from pixgrep_cli import commands

    s = _settings(ctx, ocr={"engine": ocr_engine, "workers": workers})
    _setup_logging(s, ctx.obj["verbose"])
    sys.exit(commands.run_index(s, paths=list(paths), force=force))


@main.command("search")
@click.argument("query", nargs=-1, required=True)
@_result_options
@click.option("--all", "show_all", is_flag=True, help="Also results below the relevance floor.")
@click.option("--in", "in_dir", type=click.Path(file_okay=False), default=None, help="Only results under DIR.")
@click.option("--since", default=None, metavar="DATE", help="Only files modified on or after DATE (YYYY-MM-DD).")
@click.option("--until", default=None, metavar="DATE", help="Only files modified on or before DATE.")
@click.option("--type", "types", multiple=True, metavar="TYPE", help="Only this image type (jpeg, png, gif, webp...).")
@click.option(
    "--source", type=click.Choice(["ocr", "caption"]), default=None, help="Only matches in OCR text or captions."
)
@click.option("--mode", type=click.Choice(["hybrid", "semantic", "keyword"]), default=None)
@click.option(
    "--montage", type=click.Path(dir_okay=False), default=None, help="Write a grid of the hits to this image."
)
@click.pass_context
def search_cmd(ctx: click.Context, query: tuple[str, ...], **kw: Any) -> None:
    """Search the index; uses the daemon when it runs."""
    from pixgrep_cli import commands

    s = _settings(ctx)
    _setup_logging(s, ctx.obj["verbose"])
    sys.exit(commands.run_search(s, query=" ".join(query), **kw))


@main.command("similar")
@click.argument("image", type=click.Path(dir_okay=False))
@_result_options
@click.pass_context
def similar_cmd(ctx: click.Context, image: str, **kw: Any) -> None:
    """Images with text like IMAGE's: from the index when it holds IMAGE, else OCR'd now."""
    from pixgrep_cli import commands

    s = _settings(ctx)
    _setup_logging(s, ctx.obj["verbose"])
    sys.exit(commands.run_similar(s, image=image, **kw))


@main.command("status")
@click.option("--failed", is_flag=True, help="List failures with their reasons.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def status_cmd(ctx: click.Context, failed: bool, as_json: bool) -> None:
    """Counts, watched folders, the daemon's state and failures."""
    from pixgrep_cli import commands

    s = _settings(ctx)
    _setup_logging(s, ctx.obj["verbose"])
    sys.exit(commands.run_status(s, failed=failed, as_json=as_json))


@main.command("models")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def models_cmd(ctx: click.Context, as_json: bool) -> None:
    """List the configured models: source, size, offline availability."""
    from pixgrep_cli import commands

    sys.exit(commands.run_models(_settings(ctx), as_json=as_json))


@main.command("reindex")
@click.option("--stale", is_flag=True, help="Only re-run the stages whose model or settings changed.")
@click.option("--embeddings", is_flag=True, help="Rebuild the vector collection with the current embedder (no OCR).")
@click.option("--all", "everything", is_flag=True, help="Re-run every stage for every image.")
@click.pass_context
def reindex_cmd(ctx: click.Context, stale: bool, embeddings: bool, everything: bool) -> None:
    """Re-run pipeline stages over what is already indexed."""
    from pixgrep_cli import commands

    if sum((stale, embeddings, everything)) != 1:
        raise click.UsageError("choose one of --stale, --embeddings, --all")
    s = _settings(ctx)
    _setup_logging(s, ctx.obj["verbose"])
    sys.exit(commands.run_reindex(s, stale=stale, embeddings=embeddings, everything=everything))


@main.command("config")
@click.pass_context
def config_cmd(ctx: click.Context) -> None:
    """Print the effective settings as JSON."""
    s = _settings(ctx)
    click.echo(json.dumps(s.public_dump(), indent=2, ensure_ascii=False))


main.add_command(service)
main.add_command(ui_cmd)
main.add_command(doctor)
for _cmd in DAEMON_COMMANDS:
    main.add_command(_cmd)


def run() -> None:
    # Broken pipes (pixgrep search | head) are normal for a grep-like tool.
    try:
        main(prog_name="pixgrep")
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(0)


if __name__ == "__main__":
    run()
