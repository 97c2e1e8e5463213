"""The `openmementos` command line. Each command lives in `openmementos.commands.<name>`.

A stage command is a function of its request model (`openmementos.options`); `commands.adapter.command`
turns it into a Typer command whose options are the request's fields. Command modules import the heavy
libraries (datasets, torch, openai) inside the command body, so `openmementos --help` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from typing import Annotated, Any

import typer

from openmementos.commands.adapter import HelpCommand, HelpGroup, command, help_text
from openmementos.commands.annotate import annotate
from openmementos.commands.download import download
from openmementos.commands.generate import generate
from openmementos.commands.publish import publish
from openmementos.commands.run import run
from openmementos.commands.segment import segment
from openmementos.commands.serve import serve
from openmementos.commands.sft import sft
from openmementos.commands.stats import stats
from openmementos.commands.validate import validate

STAGE_COMMANDS: dict[str, Callable[[Any], None]] = {
    "download": download,
    "segment": segment,
    "annotate": annotate,
    "validate": validate,
    "stats": stats,
    "publish": publish,
}
"""The pipeline's stages, in order: what `openmementos run` calls with each stage's request."""


def _print_version(asked: bool) -> None:
    if asked:
        typer.echo(f"openmementos {version('openmementos')}")
        raise typer.Exit()


app = typer.Typer(
    name="openmementos",
    help=help_text(
        """Build, check, publish and consume MEMENTO training data: reasoning traces cut into blocks,
        each followed by a memento (a terse summary of the block).

        Pipeline: download -> segment -> annotate -> validate -> stats -> publish (or `run PIPELINE.yaml`
        for all of them); then sft, generate and serve."""
    ),
    cls=HelpGroup,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="rich",
)


@app.callback()
def _main(
    show_version: Annotated[
        bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    pass


# In pipeline order: that is how `--help` lists them.
for function in (*STAGE_COMMANDS.values(), run, sft, generate):
    app.command(cls=HelpCommand)(command(function))
# serve hands the arguments after `--` to vLLM.
app.command(
    cls=HelpCommand,
    help=help_text(serve.__doc__),
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)(serve)
