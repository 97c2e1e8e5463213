"""`openmementos run`: every stage of a recipe, in order, from one pipeline file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def run(
    pipeline: Annotated[Path, typer.Argument(help="A pipeline YAML file, e.g. pipelines/demo.yaml.", dir_okay=False)],
    from_stage: Annotated[
        str | None, typer.Option("--from", metavar="STAGE", help="Start at this stage (earlier ones are done).")
    ] = None,
    until: Annotated[str | None, typer.Option(metavar="STAGE", help="Stop after this stage.")] = None,
    check: Annotated[
        bool, typer.Option("--check", help="Only check the file and print the stages it would run.")
    ] = False,
) -> None:
    """Run download -> segment -> annotate -> validate -> stats -> publish as a pipeline file describes.

    Each stage's options are its command's options (dashes as underscores), checked before anything
    runs; stage folders default to <workdir>/<stage>, each reading the one before. Every stage resumes
    where it stopped, so rerunning after a crash or Ctrl-C continues the run. Secrets come from the
    environment ($OPENAI_API_KEY, $HF_TOKEN), never from the file.

    Examples:

      openmementos run pipelines/demo.yaml

      openmementos run pipelines/openmementos-228k.yaml --until validate
    """
    from openmementos.pipeline import PipelineError, load_pipeline, run_pipeline

    try:
        calls = load_pipeline(pipeline)
        if check:
            for call in calls:
                given = ", ".join(f"{key}={_shown(value)}" for key, value in call.given.items())
                typer.echo(f"{call.name}: {given}")
            return
        run_pipeline(calls, start=from_stage, stop=until, echo=lambda line: typer.secho(line, bold=True))
    except PipelineError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    typer.secho(f"pipeline {pipeline} finished", fg="green")


def _shown(value: object) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
