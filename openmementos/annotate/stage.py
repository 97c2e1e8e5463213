"""The annotate stage on shards: SegmentedTrace shards in, AnnotatedTrace shards (and quarantine) out.

`runtime.stage.Stage` owns the files: one output shard per input shard, written under a temporary name
and published whole, so a row is written exactly once however often a run is killed and resumed. What a
killed run had paid for is not lost either: every LLM answer is in the response cache the moment it
arrives, so the rerun of an unfinished shard replays them for free.

LLM traces run concurrently on one engine (`AnnotatorShards`, an `LLMShardProcessor`); rows come back in
input order through a window of traces in flight, so the output is deterministic and memory stays
flat. The extractive annotator needs no loop and may run in worker processes. `run_annotate` is the
stage's entry point; it also writes the run report (`annotate_report.json`), interrupted or not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmementos.annotate.accounting import LiveStatus, Tally, run_report, write_report, write_shard_tally
from openmementos.annotate.extractive import EXTRACTIVE_VERSION, annotate_extractive
from openmementos.annotate.prompting import default_prompts
from openmementos.annotate.recipe import Outcome, Recipe, Spend
from openmementos.annotate.request import EXTRACTIVE, STAGE, AnnotateRequest, RecipeSettings
from openmementos.llm import ChatCompleter
from openmementos.llm.options import engine_opener
from openmementos.llm.shards import LLMShardProcessor
from openmementos.runtime.manifest import MANIFEST, Manifest, StageError, done_marker, read_manifest
from openmementos.runtime.selection import ShardSelection
from openmementos.runtime.shardio import iter_records, parquet_rows
from openmementos.runtime.stage import (
    Quarantined,
    ShardTask,
    Stage,
    check_resumable,
    first_of,
    shard_limits,
    tasks_over,
)
from openmementos.schema import AnnotatedTrace, SegmentedTrace

AnnotateRow = AnnotatedTrace | Quarantined
"""What the annotate stage writes for one input trace."""

REFUSAL_STREAK = 10
"""Consecutive traces whose requests the server refused before the run stops: a wrong model name or
parameter would otherwise quarantine the whole dataset."""
BATCH_WINDOW = 20_000
"""Traces of a shard put into one Batch API batch per recipe step."""


def read_traces(task: ShardTask[Path], limits: dict[str, int] | None) -> Iterator[SegmentedTrace]:
    return first_of(iter_records(task.source, SegmentedTrace), limits, task.name)


@dataclass(frozen=True)
class ExtractiveShards:
    """The shard processor of `--model extractive` (picklable: it may run in worker processes)."""

    out_dir: Path
    limits: dict[str, int] | None = None
    live: LiveStatus | None = None

    def __call__(self, task: ShardTask[Path]) -> Iterator[AnnotateRow]:
        tally = Tally()
        for trace in read_traces(task, self.limits):
            try:
                item: AnnotateRow = annotate_extractive(trace)
            except ValueError as exc:  # pydantic's ValidationError included
                item = Quarantined(trace.id, "extractive_failed", str(exc).splitlines()[0], trace)
            outcome = Outcome(item, Spend())
            tally.add(outcome, threshold=0)
            if self.live is not None:
                self.live.run.add(outcome, threshold=0)
            yield item
        write_shard_tally(self.out_dir, task.name, tally)


class AnnotatorShards(LLMShardProcessor[SegmentedTrace, Outcome]):
    """The shard processor of an LLM annotator: the recipe for every trace, on one engine."""

    def __init__(
        self,
        out_dir: Path,
        settings: RecipeSettings,
        open_engine: Callable[[], Awaitable[ChatCompleter]],
        live: LiveStatus,
        *,
        window: int,
        limits: dict[str, int] | None = None,
    ) -> None:
        super().__init__(open_engine, window, name="annotate-loop")
        self.out_dir = out_dir
        self.settings = settings
        self.live = live
        self.limits = limits
        self.recipe: Recipe | None = None
        self._tally = Tally()
        self._refusals = 0

    def started(self, engine: ChatCompleter) -> None:
        self.recipe = Recipe(engine, self.settings)
        self.live.stats = engine.stats

    def items(self, task: ShardTask[Path]) -> Iterator[SegmentedTrace]:
        self._tally = Tally()
        return read_traces(task, self.limits)

    async def process(self, item: SegmentedTrace) -> Outcome:
        assert self.recipe is not None, "use AnnotatorShards as a context manager"
        return await self.recipe.annotate(item)

    def finish(self, result: Outcome) -> AnnotateRow:
        refused = isinstance(result.item, Quarantined) and result.item.reason == "request_rejected"
        self._refusals = self._refusals + 1 if refused else 0
        if self._refusals >= REFUSAL_STREAK:
            assert isinstance(result.item, Quarantined)
            raise StageError(
                f"the server refused the requests of {self._refusals} traces in a row ({result.item.detail}); "
                "check --model, --temperature and the endpoint, then rerun (this shard was not written)"
            )
        self._tally.add(result, self.settings.threshold)
        self.live.run.add(result, self.settings.threshold)
        return result.item

    def shard_finished(self, task: ShardTask[Any]) -> None:
        write_shard_tally(self.out_dir, task.name, self._tally)


def stage_options(
    model: str, prompt_version: str, limit: int | None, settings: RecipeSettings | None
) -> dict[str, Any]:
    """What the output depends on (recorded in the manifest; a resume must match it)."""
    options: dict[str, Any] = {"model": model, "prompt_version": prompt_version, "limit": limit}
    if settings is not None:
        options.update(settings.model_dump(exclude={"model"}))
    return options


@dataclass(frozen=True)
class AnnotateResult:
    manifest: Manifest
    report: dict[str, Any]
    """The run report, as written to `OUT_DIR/annotate_report.json`."""
    report_path: Path


@dataclass(frozen=True)
class _Inputs:
    tasks: list[ShardTask[Path]]
    limits: dict[str, int] | None
    todo_traces: int


def _inputs(request: AnnotateRequest) -> _Inputs:
    """The shard tasks, per-shard limits and the number of traces this run has left to annotate."""
    selection: ShardSelection = request.shard
    tasks = tasks_over(request.in_dir, selection, reader=STAGE, expects="segment")
    picked = [task for task in tasks if selection.picks(task.index)]
    limits = shard_limits(picked, request.limit)
    todo = [task.name for task in picked if not done_marker(request.out_dir, task.name).exists()]
    rows = {name: parquet_rows(request.in_dir / f"{name}.parquet") for name in todo}
    return _Inputs(tasks, limits, sum(limits[name] if limits else rows[name] for name in todo))


def run_annotate(request: AnnotateRequest) -> AnnotateResult:
    """Annotate every trace of a finished `segment` folder into `request.out_dir` (resumable per shard)."""
    settings = request.recipe()
    inputs = _inputs(request)
    if settings.model == EXTRACTIVE:
        options = stage_options(EXTRACTIVE, EXTRACTIVE_VERSION, request.limit, None)
    else:
        options = stage_options(settings.model, default_prompts().version, request.limit, settings)
    check_resumable(request.out_dir, STAGE, options, [task.name for task in inputs.tasks])  # before anything is made
    live = LiveStatus(inputs.todo_traces)
    if settings.model == EXTRACTIVE:
        executor = request.make_executor()
        one_process = getattr(executor, "workers", 1) == 1
        stage = Stage(
            name=STAGE,
            out_dir=request.out_dir,
            model=AnnotatedTrace,
            process=ExtractiveShards(request.out_dir, inputs.limits, live if one_process else None),
            options=options,
            description="annotate (extractive)",
            status=live if one_process else None,
        )
        return _run_and_report(stage, inputs, request, executor, live, threshold=0.0, max_rounds=1)
    open_engine = engine_opener(
        request, settings.model, request.out_dir, batch=request.batch, poll_interval_s=request.poll_interval
    )
    # Traces in flight: enough to keep `concurrency` requests busy despite in-order output; a batch
    # run puts up to BATCH_WINDOW traces of a shard into one batch per recipe step.
    window = BATCH_WINDOW if request.batch else request.concurrency * 4
    with AnnotatorShards(request.out_dir, settings, open_engine, live, window=window, limits=inputs.limits) as process:
        stage = Stage(
            name=STAGE,
            out_dir=request.out_dir,
            model=AnnotatedTrace,
            process=process,
            options=options,
            description=f"annotate ({settings.model}{', batch' if request.batch else ''})",
            status=live,
        )
        max_rounds = settings.max_rounds if settings.judged else 0
        return _run_and_report(
            stage, inputs, request, request.make_executor(), live, threshold=settings.threshold, max_rounds=max_rounds
        )


def _run_and_report(
    stage: Stage,
    inputs: _Inputs,
    request: AnnotateRequest,
    executor: Any,
    live: LiveStatus,
    *,
    threshold: float,
    max_rounds: int,
) -> AnnotateResult:
    """Run the stage, then write the run report (also when interrupted or failed)."""
    interrupted = False
    try:
        manifest = stage.run(inputs.tasks, request.shard, executor)
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        if (stage.out_dir / MANIFEST).exists():
            report = run_report(
                stage.out_dir,
                read_manifest(stage.out_dir),
                live,
                threshold=threshold,
                max_rounds=max_rounds,
                interrupted=interrupted,
            )
            path = write_report(stage.out_dir, report)
    return AnnotateResult(manifest, report, path)
