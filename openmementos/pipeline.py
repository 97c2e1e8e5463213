"""`openmementos run PIPELINE.yaml`: the stages of one recipe, in order, from one config file.

A pipeline file names a working folder and the options of each stage it runs::

    name: demo
    workdir: out/demo
    stages:
      download: {sample: true}
      segment: {scorer: heuristic}
      annotate: {model: extractive}
      validate: {require_ascii: true}
      stats: {}
      publish: {to: out/demo/published}

Stages always run in the order download -> segment -> annotate -> validate -> stats -> publish (any may
be left out). Each writes to `<workdir>/<stage>` and reads the folder of the stage before it; `in_dir`
and `out_dir` override that (the first stage of a pipeline without `download` needs `in_dir`).
Relative paths are relative to the folder you run from, as on the command line.

A stage's options are exactly its command's options, with dashes as underscores (`min_block_tokens`,
`lambda`, `no_judge`), so `openmementos <stage> --help` documents them. They are validated against
the command's signature before anything runs. Every stage resumes where it stopped, so rerunning a
pipeline after a crash or Ctrl-C continues it. Secrets never go in the file: API keys and Hub tokens
come from the environment (`OPENAI_API_KEY`, `HF_TOKEN`).
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator

STAGES = ("download", "segment", "annotate", "validate", "stats", "publish")
"""Every stage a pipeline can run, in the order they run."""

PRODUCES_FOLDER = {"download", "segment", "annotate", "validate"}
"""Stages whose output folder the next stage reads (stats and publish only read)."""

SECRETS = {"api_key": "OPENAI_API_KEY", "token": "HF_TOKEN"}
"""Options that must come from the environment, never from a pipeline file."""


class PipelineError(ValueError):
    """A pipeline file that cannot run, or a stage that failed; the message says which and why."""


class PipelineFile(BaseModel):
    """The shape of a pipeline file (stage options are checked against each command afterwards)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A label for the run.")
    workdir: Path = Field(description="Stage folders go to <workdir>/<stage> unless a stage sets out_dir.")
    stages: dict[str, dict[str, Any] | None] = Field(description="Stage name -> its options, in run order.")

    @field_validator("stages")
    @classmethod
    def _known_and_ordered(cls, stages: dict[str, Any]) -> dict[str, Any]:
        unknown = [name for name in stages if name not in STAGES]
        if unknown:
            raise ValueError(f"unknown stage {unknown[0]!r}; stages are {', '.join(STAGES)}")
        if not stages:
            raise ValueError("no stages to run")
        order = [name for name in STAGES if name in stages]
        if list(stages) != order:
            raise ValueError(f"stages must appear in the order they run: {' -> '.join(order)}")
        return stages


@dataclass(frozen=True)
class StageCall:
    """One stage, ready to run: its command function and every argument."""

    name: str
    function: Callable[..., None]
    arguments: dict[str, Any]
    """Every parameter of the command function."""
    given: dict[str, Any]
    """What the pipeline file set, and the folders the runner chained."""

    @property
    def in_dir(self) -> Path | None:
        return self.arguments.get("in_dir")

    @property
    def out_dir(self) -> Path | None:
        return self.arguments.get("out_dir") or self.arguments.get("to")


# --------------------------------------------------------------------------- reading a pipeline


def command(stage: str) -> Callable[..., None]:
    """The Typer command function of a stage (`openmementos.commands.<stage>.<stage>`)."""
    return getattr(importlib.import_module(f"openmementos.commands.{stage}"), stage)


def option_key(name: str, parameter: inspect.Parameter) -> str:
    """The pipeline-file key of a command parameter: its long CLI option with dashes as underscores."""
    info = _typer_info(parameter)
    # Inside Annotated, typer reads a string first argument of Option(...) as a declaration too.
    first = getattr(info, "default", None)
    declarations = [*([first] if isinstance(first, str) else []), *(getattr(info, "param_decls", None) or ())]
    declared = [d for d in declarations if d.startswith("--")]
    return declared[0].removeprefix("--").replace("-", "_") if declared else name


def _typer_info(parameter: inspect.Parameter) -> Any:
    if get_origin(parameter.annotation) is Annotated:
        return next(iter(get_args(parameter.annotation)[1:]), None)
    return None


def options_model(stage: str, function: Callable[..., None]) -> type[BaseModel]:
    """A pydantic model of a command's options, built from its signature (types, defaults, bounds, help)."""
    fields: dict[str, Any] = {}
    for name, parameter in inspect.signature(function, eval_str=True).parameters.items():
        info = _typer_info(parameter)
        base = get_args(parameter.annotation)[0] if info is not None else parameter.annotation
        bounds = {
            key: value
            for key, value in (("ge", getattr(info, "min", None)), ("le", getattr(info, "max", None)))
            if value is not None
        }
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        field = Field(default, description=getattr(info, "help", None), validation_alias=option_key(name, parameter))
        fields[name] = (Annotated[base, Field(**bounds)] if bounds else base, field)
    return create_model(
        f"{stage}_options", __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True), **fields
    )


def load_pipeline(path: Path) -> list[StageCall]:
    """Read and check a pipeline file; every problem is reported before any stage runs."""
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise PipelineError(f"cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise PipelineError(f"{path} is not valid YAML: {error}") from None
    try:
        spec = PipelineFile.model_validate(raw if raw is not None else {})
    except ValidationError as error:
        raise PipelineError(f"{path}: " + _errors(error)) from None
    return plan(spec, path)


def plan(spec: PipelineFile, path: Path | str = "pipeline") -> list[StageCall]:
    """Turn a checked pipeline file into stage calls, chaining each stage's input to the previous output."""
    calls: list[StageCall] = []
    previous: Path | None = None
    folders: list[Path] = []
    for stage, given in spec.stages.items():
        options = dict(given or {})
        for key, variable in SECRETS.items():
            if key in options:
                raise PipelineError(
                    f"{path}: stages.{stage}.{key}: secrets never go in a pipeline file; set ${variable} instead"
                )
        function = command(stage)
        parameters = inspect.signature(function).parameters
        if "in_dir" in parameters and "in_dir" not in options:
            if previous is None:
                raise PipelineError(f"{path}: stages.{stage}: the first stage needs in_dir (or start with download)")
            options["in_dir"] = previous
        if "out_dir" in parameters and "out_dir" not in options:
            options["out_dir"] = spec.workdir / stage
        if stage == "stats":
            options.setdefault("plots", spec.workdir / "stats")
        if stage == "publish":
            options.setdefault("lineage", list(folders))
        try:
            arguments = options_model(stage, function).model_validate(options).model_dump()
        except ValidationError as error:
            hint = f" (see `openmementos {stage} --help`)" if "extra_forbidden" in str(error) else ""
            raise PipelineError(f"{path}: stages.{stage}: " + _errors(error) + hint) from None
        call = StageCall(stage, function, arguments, options)
        calls.append(call)
        if stage in PRODUCES_FOLDER:
            previous = call.arguments["out_dir"]
            if stage != "validate":
                folders.append(previous)
    return calls


def _errors(error: ValidationError) -> str:
    def message(e: Any) -> str:
        return "not an option of this stage" if e["type"] == "extra_forbidden" else e["msg"]

    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {message(e)}" for e in error.errors())


# --------------------------------------------------------------------------- running it


def run_pipeline(
    calls: Sequence[StageCall], start: str | None = None, stop: str | None = None, echo: Callable[[str], None] = print
) -> None:
    """Run the stage calls in order (from `start` to `stop`, inclusive); each stage resumes by itself."""
    import typer

    names = [call.name for call in calls]
    for bound in (start, stop):
        if bound is not None and bound not in names:
            raise PipelineError(f"this pipeline has no stage {bound!r}; it runs {', '.join(names)}")
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(names) - 1
    chosen = calls[first : last + 1]
    for number, call in enumerate(chosen, start=1):
        where = " -> ".join(str(p) for p in (call.in_dir, call.out_dir) if p is not None)
        echo(f"== [{number}/{len(chosen)}] {call.name}: {where}")
        try:
            call.function(**call.arguments)
        except typer.Exit as stop_signal:
            if stop_signal.exit_code:
                raise PipelineError(f"stage {call.name} failed (exit status {stop_signal.exit_code})") from None
        except typer.Abort:
            raise PipelineError(f"stage {call.name} was aborted") from None
        except Exception as error:
            if not hasattr(error, "format_message"):  # not a usage error (BadParameter & co) of the stage
                raise
            raise PipelineError(f"stage {call.name}: {error.format_message()}") from None
