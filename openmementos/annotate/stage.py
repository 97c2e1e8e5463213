"""The annotate stage on shards: SegmentedTrace shards in, AnnotatedTrace shards (and quarantine) out.

`shards.Stage` owns the files: one output shard per input shard, written under a temporary name and
published whole, so a row is written exactly once however often a run is killed and resumed. What a
killed run had paid for is not lost either: every LLM answer is in the response cache the moment it
arrives, so the rerun of an unfinished shard replays them for free.

Within a shard, LLM traces run concurrently on one engine on an asyncio loop in a background thread
(`llm.runner`; the engine bounds requests in flight); rows come back in input order through a window
of traces in flight, so the output is deterministic and memory stays flat. The extractive annotator needs no loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from openmementos.annotate.accounting import LiveStatus, Tally, write_shard_tally
from openmementos.annotate.extractive import annotate_extractive
from openmementos.annotate.recipe import Outcome, Recipe, RecipeSettings, Spend
from openmementos.llm import ChatCompleter
from openmementos.llm.runner import EngineThread
from openmementos.schema import AnnotatedTrace, SegmentedTrace
from openmementos.shards import Quarantined, ShardTask, StageError, iter_records

Row = AnnotatedTrace | Quarantined

REFUSAL_STREAK = 10
"""Consecutive traces whose requests the server refused before the run stops: a wrong model name or
parameter would otherwise quarantine the whole dataset."""


def shard_limits(paths: list[Path], names: list[str], limit: int | None) -> dict[str, int] | None:
    """`--limit N`: how many traces to take from each shard, the first N in shard order."""
    if limit is None:
        return None
    limits, left = {}, limit
    for path, name in zip(paths, names, strict=True):
        limits[name] = min(pq.ParquetFile(path).metadata.num_rows, left)
        left -= limits[name]
    return limits


def count_traces(paths: list[Path], names: list[str], limits: dict[str, int] | None) -> int:
    rows = [pq.ParquetFile(path).metadata.num_rows for path in paths]
    return sum(limits[name] if limits else n for name, n in zip(names, rows, strict=True))


def read_traces(task: ShardTask[Path], limits: dict[str, int] | None) -> Iterator[SegmentedTrace]:
    limit = limits.get(task.name, 0) if limits is not None else None
    for number, trace in enumerate(iter_records(task.source, SegmentedTrace)):
        if limit is not None and number >= limit:
            return
        yield trace


@dataclass(frozen=True)
class ExtractiveShards:
    """The shard processor of `--model extractive` (picklable: it may run in worker processes)."""

    out_dir: Path
    limits: dict[str, int] | None = None
    live: LiveStatus | None = None

    def __call__(self, task: ShardTask[Path]) -> Iterator[Row]:
        tally = Tally()
        for trace in read_traces(task, self.limits):
            try:
                item: Row = annotate_extractive(trace)
            except ValueError as exc:  # pydantic's ValidationError included
                item = Quarantined(trace.id, "extractive_failed", str(exc).splitlines()[0], trace)
            outcome = Outcome(item, Spend())
            tally.add(outcome, threshold=0)
            if self.live is not None:
                self.live.run.add(outcome, threshold=0)
            yield item
        write_shard_tally(self.out_dir, task.name, tally)


class LLMShards:
    """The shard processor of an LLM annotator: the recipe on one engine, on a background event loop.

    Use as a context manager around `Stage.run` (one process, `workers=1`: concurrency comes from the
    loop). `open_engine` is awaited on the loop to build the engine, so its clients bind to that loop.
    """

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
        self.out_dir = out_dir
        self.settings = settings
        self.live = live
        self.window = max(window, 1)
        self.limits = limits
        self._runner = EngineThread(open_engine, name="annotate-loop")
        self._refusals = 0
        self.recipe: Recipe | None = None

    def __enter__(self) -> LLMShards:
        engine = self._runner.__enter__().engine
        self.recipe = Recipe(engine, self.settings)
        self.live.stats = engine.stats
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.__exit__(*exc)

    def __call__(self, task: ShardTask[Path]) -> Iterator[Row]:
        assert self.recipe is not None, "use LLMShards as a context manager"
        tally = Tally()
        outcomes = self._runner.map_ordered(self.recipe.annotate, read_traces(task, self.limits), self.window)
        with closing(outcomes):  # interrupted or failed: stop what this shard still has in flight
            for outcome in outcomes:
                yield self._finish(outcome, tally)
        write_shard_tally(self.out_dir, task.name, tally)

    def _finish(self, outcome: Outcome, tally: Tally) -> Row:
        refused = isinstance(outcome.item, Quarantined) and outcome.item.reason == "request_rejected"
        self._refusals = self._refusals + 1 if refused else 0
        if self._refusals >= REFUSAL_STREAK:
            assert isinstance(outcome.item, Quarantined)
            raise StageError(
                f"the server refused the requests of {self._refusals} traces in a row ({outcome.item.detail}); "
                "check --model, --temperature and the endpoint, then rerun (this shard was not written)"
            )
        tally.add(outcome, self.settings.threshold)
        self.live.run.add(outcome, self.settings.threshold)
        return outcome.item


def stage_options(
    model: str, prompt_version: str, limit: int | None, settings: RecipeSettings | None
) -> dict[str, Any]:
    """What the output depends on (recorded in the manifest; a resume must match it)."""
    options: dict[str, Any] = {"model": model, "prompt_version": prompt_version, "limit": limit}
    if settings is not None:
        options.update(
            judge=settings.judge,
            threshold=settings.threshold,
            max_rounds=settings.max_rounds,
            max_reasks=settings.max_reasks,
            temperature=settings.temperature,
        )
    return options
