"""`openmementos run`: every stage of a recipe, in order, from one pipeline file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import Field

from openmementos.options import Cli, Request

if TYPE_CHECKING:
    from openmementos.pipeline import StageCall


class RunRequest(Request):
    pipeline: Annotated[Path, Cli(argument=True)] = Field(description="A pipeline YAML file, e.g. pipelines/demo.yaml.")
    from_stage: Annotated[str | None, Cli(flag="--from", metavar="STAGE")] = Field(
        None, description="Start at this stage (earlier ones are done)."
    )
    until: Annotated[str | None, Cli(metavar="STAGE")] = Field(None, description="Stop after this stage.")
    check: bool = Field(
        False,
        description="Only check the file and print the stages it would run, the annotate stage's cost estimate "
        "(once its input exists) and which secrets the plan needs and whether each is set.",
    )


def run(request: RunRequest) -> None:
    """Run download -> segment -> annotate -> validate -> stats -> publish as a pipeline file describes.

    Each stage's options are its command's options (dashes as underscores), checked before anything
    runs; stage folders default to <workdir>/<stage>, each reading the one before. Every stage resumes
    where it stopped, so rerunning after a crash or Ctrl-C continues the run. Secrets come from the
    environment ($OPENAI_API_KEY, $HF_TOKEN), never from the file.

    Examples:

      openmementos run pipelines/demo.yaml

      openmementos run pipelines/openmementos-228k.yaml --until validate
    """
    from openmementos.pipeline import load_pipeline, run_pipeline

    calls = load_pipeline(request.pipeline)
    if request.check:
        _check(calls)
        return
    run_pipeline(
        calls,
        start=request.from_stage,
        stop=request.until,
        echo=lambda line: typer.secho(line, bold=True),
        perform=_as_command,
    )
    typer.secho(f"pipeline {request.pipeline} finished", fg="green")


def _check(calls: list[StageCall]) -> None:
    """Each stage with its options (and an annotate stage's cost estimate), then the secrets the plan uses."""
    from openmementos.pipeline import estimate_of, secrets_used

    for call in calls:
        given = ", ".join(f"{key}={_shown(value)}" for key, value in call.given.items())
        typer.echo(f"{call.name}: {given}")
        estimate = estimate_of(call, calls)
        if estimate is not None:
            lines = [estimate] if isinstance(estimate, str) else estimate.render()
            typer.echo("\n".join(f"  {line}" for line in lines))
    uses = secrets_used(calls)
    typer.echo("secrets:" + ("" if uses else " none"))
    for use in uses:
        who = [f"required by {', '.join(use.required_by)}"] if use.required_by else []
        who += [f"optional for {', '.join(use.optional_for)}"] if use.optional_for else []
        state = "set" if use.is_set else ("NOT SET" if use.required_by else "not set")
        if use.variable == "HF_TOKEN" and not use.is_set:
            state += " (a stored `hf auth login` token serves too)"
        typer.echo(f"  ${use.variable} ({'; '.join(who)}): {state}")


def _as_command(call: StageCall) -> Any:
    """Run a stage the way its command does (so it prints what the command prints)."""
    from openmementos.cli import STAGE_COMMANDS

    return STAGE_COMMANDS[call.name](call.request)


def _shown(value: object) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list) else str(value)
