"""The `openmementos` command line. Each command lives in `openmementos.commands.<name>`.

Command modules import heavy libraries (datasets, torch, openai) inside the command body, so
`openmementos --help` stays fast.
"""

from __future__ import annotations

import typer

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

app = typer.Typer(
    name="openmementos",
    help=(
        "Build, check, publish and consume MEMENTO training data: reasoning traces cut into blocks, "
        "each followed by a memento (a terse summary of the block).\n\n"
        "Pipeline: download -> segment -> annotate -> validate -> stats -> publish "
        "(or `run PIPELINE.yaml` for all of them); then sft, generate and serve."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode="markdown",
)

# In pipeline order: that is how `--help` lists them.
for command in (download, segment, annotate, validate, stats, publish, run, sft, generate):
    app.command()(command)
# serve hands the arguments after `--` to vLLM.
app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(serve)
