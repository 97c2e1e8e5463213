"""`openmementos run PIPELINE.yaml`: the stages of one recipe, in order, from one config file.

A pipeline file names a working folder and the options of each stage it runs::

    name: demo
    workdir: ../out/demo
    stages:
      download: {sample: true}
      segment: {scorer: heuristic}
      annotate: {model: extractive}
      validate: {require_ascii: true, report: validate_report.json}
      stats: {}
      publish: {to: published}

Stages always run in the order download -> segment -> annotate -> validate -> stats -> publish (any may
be left out). Each writes to `<workdir>/<stage>` and reads the folder of the stage before it; `in_dir`
and `out_dir` override that (the first stage of a pipeline without `download` needs `in_dir`).

Relative paths do not depend on the folder you run from:

- `workdir` is relative to the pipeline file's folder;
- what a stage reads from outside the pipeline (`in_dir`, download's `input`, publish's `lineage`) is
  relative to the pipeline file's folder too;
- every other path, which is what the stages write (`out_dir`, `report`, `to`, `plots`, `csv`,
  `parquet`, `cache_dir`), is relative to the workdir.

So a copy of a pipeline file with another `workdir` writes only under its own workdir.

A stage's options are the fields of its request model (`DownloadRequest`, `SegmentRequest`, ...), which
are also its command's options with dashes as underscores (`min_block_tokens`, `lambda`, `judge`), so
`openmementos <stage> --help` documents them. Every stage is checked before anything runs, and runs
through the library (`run_<stage>`). Every stage resumes where it stopped, so rerunning a pipeline after
a crash or Ctrl-C continues it. Secrets never go in the file: API keys and Hub tokens come from the
environment (`OPENAI_API_KEY`, `HF_TOKEN`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo

from openmementos import annotate, download, publish, segment, stats, validate
from openmementos.annotate.request import EXTRACTIVE, AnnotateRequest
from openmementos.download.request import DownloadRequest
from openmementos.llm.errors import LLMError
from openmementos.options import Request, cli_of
from openmementos.publish.request import PublishRequest
from openmementos.runtime.manifest import MANIFEST, StageError
from openmementos.segment.request import Scorer, SegmentRequest
from openmementos.stats.request import StatsRequest
from openmementos.validate.request import ValidateRequest

if TYPE_CHECKING:
    from openmementos.llm.cost import CostEstimate

REQUESTS: dict[str, type[Request]] = {
    "download": DownloadRequest,
    "segment": SegmentRequest,
    "annotate": AnnotateRequest,
    "validate": ValidateRequest,
    "stats": StatsRequest,
    "publish": PublishRequest,
}
"""Every stage a pipeline can run, in the order they run, with its request model."""

RUNNERS: dict[str, Callable[[Any], Any]] = {
    "download": lambda request: download.run_download(request),
    "segment": lambda request: segment.run_segment(request),
    "annotate": lambda request: annotate.run_annotate(request),
    "validate": lambda request: validate.run_validate(request),
    "stats": lambda request: stats.run_stats(request),
    "publish": lambda request: publish.run_publish(request),
}
"""Each stage's library entry point (the packages import their modules on first use)."""

STAGES = tuple(REQUESTS)
PRODUCES_FOLDER = {"download", "segment", "annotate", "validate"}
"""Stages whose output folder the next stage reads (stats and publish only read)."""
READ_PATHS = frozenset({"in_dir", "input", "lineage"})
"""Path options naming what a stage reads from outside the pipeline: relative to the pipeline file's folder."""


class PipelineError(ValueError):
    """A pipeline file that cannot run, or a stage that failed; the message says which and why."""


class PipelineFile(BaseModel):
    """The shape of a pipeline file (stage options are checked against each stage's request)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A label for the run.")
    workdir: Path = Field(
        description="Stage folders go to <workdir>/<stage> unless a stage sets out_dir; relative to the file's folder."
    )
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
    """One stage, ready to run: its request, and what the pipeline file set (plus the chained folders)."""

    name: str
    request: Request
    given: dict[str, Any]

    @property
    def in_dir(self) -> Path | None:
        return getattr(self.request, "in_dir", None)

    @property
    def out_dir(self) -> Path | None:
        return getattr(self.request, "out_dir", None) or getattr(self.request, "to", None)


# --------------------------------------------------------------------------- reading a pipeline


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
    return plan(spec, path, base=path.parent)


def _under(base: Path, path: Path) -> Path:
    """`path` relative to `base` (as written when absolute), without `..` detours."""
    return Path(os.path.normpath(base / path))


def _is_path(info: FieldInfo) -> bool:
    kinds = (info.annotation, *get_args(info.annotation))
    return Path in kinds or list[Path] in kinds


def _resolved(options: dict[str, Any], request_type: type[Request], base: Path, workdir: Path) -> dict[str, Any]:
    """The path options given in a pipeline file, resolved as the module docstring says."""
    resolved = dict(options)
    for name, info in request_type.model_fields.items():
        key = request_type.key_of(name)
        value = options.get(key)
        if value is None or not _is_path(info):
            continue
        root = base if name in READ_PATHS else workdir
        if isinstance(value, list):
            resolved[key] = [_under(root, Path(item)) for item in value]
        elif isinstance(value, str | Path):
            resolved[key] = _under(root, Path(value))
    return resolved


def secret_keys(request_type: type[Request]) -> dict[str, str]:
    """The pipeline keys of a request's secrets, and the environment variable each must come from."""
    return {
        request_type.key_of(name): env
        for name, info in request_type.model_fields.items()
        if (env := cli_of(info).secret_env) is not None
    }


@dataclass(frozen=True)
class SecretUse:
    """A secret a pipeline's stages use: its environment variable, by whom, and whether it is set."""

    variable: str
    required_by: list[str]
    optional_for: list[str]
    is_set: bool


def secrets_used(calls: Sequence[StageCall]) -> list[SecretUse]:
    """The secrets the stages will use (from `Cli.secret_env`), and whether each is set (never its value)."""
    required: dict[str, list[str]] = {}
    optional: dict[str, list[str]] = {}
    for call in calls:
        for name, info in type(call.request).model_fields.items():
            variable = cli_of(info).secret_env
            need = call.request.secret_required(name) if variable else None
            if variable and need is not None:
                (required if need else optional).setdefault(variable, []).append(call.name)
    variables = sorted({*required, *optional})
    return [
        SecretUse(name, required.get(name, []), optional.get(name, []), bool(os.environ.get(name)))
        for name in variables
    ]


def estimate_of(call: StageCall, calls: Sequence[StageCall] = ()) -> CostEstimate | str | None:
    """The cost estimate of a stage that talks to an LLM (annotate, `segment --scorer llm`), or why there
    is none yet; None for the other stages.

    Before the plan's segment stage has run, annotate's estimate cuts a sample of the download folder
    in memory, so the price is known before any LLM is paid (download sends no LLM request).
    """
    request = call.request
    try:
        if isinstance(request, SegmentRequest) and request.scorer is Scorer.llm:
            if not _holds_output(request.in_dir):
                return _waiting(request.in_dir, "download")
            from openmementos.segment.estimate import estimate_segment

            return estimate_segment(request)
        if not isinstance(request, AnnotateRequest):
            return None
        if request.annotator() == EXTRACTIVE:
            return "cost: none (the offline extractive annotator sends no LLM request)"
        if _holds_output(request.in_dir):
            return annotate.estimate_annotate(request)
        feeding = next((c.request for c in calls if c.name == "segment" and c.out_dir == request.in_dir), None)
        if not isinstance(feeding, SegmentRequest):
            return _waiting(request.in_dir, "segment")
        if not _holds_output(feeding.in_dir):
            return _waiting(feeding.in_dir, "download")
        return annotate.estimate_annotate(request, segment=feeding)
    except (StageError, ValueError, OSError) as error:
        return f"cost estimate: not available ({error})"


def _waiting(folder: Path, stage: str) -> str:
    return f"cost estimate: once {folder} holds {stage}'s output (run --until {stage}, then --check again)"


def _holds_output(folder: Path) -> bool:
    return (folder / MANIFEST).exists()


def plan(spec: PipelineFile, path: Path | str = "pipeline", base: Path = Path()) -> list[StageCall]:
    """Turn a checked pipeline file into stage calls, chaining each stage's input to the previous output.

    `base` is the pipeline file's folder: relative paths resolve from it and from the workdir.
    """
    calls: list[StageCall] = []
    previous: Path | None = None
    folders: list[Path] = []
    workdir = _under(base, spec.workdir)
    for stage, given in spec.stages.items():
        request_type = REQUESTS[stage]
        options = dict(given or {})
        for key, variable in secret_keys(request_type).items():
            if key in options:
                raise PipelineError(
                    f"{path}: stages.{stage}.{key}: secrets never go in a pipeline file; set ${variable} instead"
                )
        options = _resolved(options, request_type, base, workdir)
        fields = request_type.model_fields
        if "in_dir" in fields and "in_dir" not in options:
            if previous is None:
                raise PipelineError(f"{path}: stages.{stage}: the first stage needs in_dir (or start with download)")
            options["in_dir"] = previous
        if "out_dir" in fields and "out_dir" not in options:
            options["out_dir"] = workdir / stage
        if stage == "stats":
            options.setdefault("plots", workdir / "stats")
        if stage == "publish":
            options.setdefault("lineage", list(folders))
        try:
            request = request_type.model_validate(options)
        except ValidationError as error:
            hint = f" (see `openmementos {stage} --help`)" if "extra_forbidden" in str(error) else ""
            raise PipelineError(f"{path}: stages.{stage}: " + _errors(error) + hint) from None
        call = StageCall(stage, request, options)
        calls.append(call)
        if stage in PRODUCES_FOLDER:
            previous = call.out_dir
            if stage != "validate":
                folders.append(previous)  # type: ignore[arg-type]
    return calls


def _errors(error: ValidationError) -> str:
    def message(e: Any) -> str:
        return "not an option of this stage" if e["type"] == "extra_forbidden" else e["msg"]

    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'file'}: {message(e)}" for e in error.errors())


# --------------------------------------------------------------------------- running it


def run_library(call: StageCall) -> Any:
    """Run one stage through the library; its result."""
    return RUNNERS[call.name](call.request)


def run_pipeline(
    calls: Sequence[StageCall],
    start: str | None = None,
    stop: str | None = None,
    echo: Callable[[str], None] = print,
    perform: Callable[[StageCall], Any] = run_library,
) -> list[Any]:
    """Run the stage calls in order (from `start` to `stop`, inclusive); each stage resumes by itself.

    `perform` runs one call (default: the library; the CLI passes its commands, which also print).
    Returns what each call returned.
    """
    names = [call.name for call in calls]
    for bound in (start, stop):
        if bound is not None and bound not in names:
            raise PipelineError(f"this pipeline has no stage {bound!r}; it runs {', '.join(names)}")
    first = names.index(start) if start else 0
    last = names.index(stop) if stop else len(names) - 1
    chosen = calls[first : last + 1]
    results = []
    for number, call in enumerate(chosen, start=1):
        where = " -> ".join(str(p) for p in (call.in_dir, call.out_dir) if p is not None)
        echo(f"== [{number}/{len(chosen)}] {call.name}: {where}")
        try:
            results.append(perform(call))
        except (StageError, LLMError, ValueError, OSError) as error:
            raise PipelineError(f"stage {call.name}: {error}") from error
    return results
