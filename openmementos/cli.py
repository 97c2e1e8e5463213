"""The `openmementos` command line. Each command lives in `openmementos.commands.<name>`."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="openmementos",
    help=(
        "Build, check, publish and consume MEMENTO training data: reasoning traces cut into blocks, "
        "each followed by a memento (a terse summary of the block).\n\n"
        "Pipeline: download -> segment -> annotate -> validate -> publish (or `run PIPELINE.yaml` for all)."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def _main() -> None:
    """Global options go here; every command is registered below."""


# Command registrations (one line each).
app.command("sft")(__import__("openmementos.commands.sft", fromlist=["sft"]).sft)
app.command("generate")(__import__("openmementos.commands.generate", fromlist=["generate"]).generate)
app.command("download")(__import__("openmementos.commands.download", fromlist=["download"]).download)
app.command("segment")(__import__("openmementos.commands.segment", fromlist=["segment"]).segment)
app.command("validate")(__import__("openmementos.commands.validate", fromlist=["validate"]).validate)
app.command("annotate")(__import__("openmementos.commands.annotate", fromlist=["annotate"]).annotate)
app.command("stats")(__import__("openmementos.commands.stats", fromlist=["stats"]).stats)
app.command("publish")(__import__("openmementos.commands.publish", fromlist=["publish"]).publish)
app.command("run")(__import__("openmementos.commands.run", fromlist=["run"]).run)
