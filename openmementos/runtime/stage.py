"""The resumable per-shard stage runner.

A stage turns a universe of input shards into one output shard each (see `manifest` for the folder
layout). Files are written under a temporary name and renamed, and the done marker comes last, so a
killed run leaves either a finished shard or nothing that counts; a rerun skips finished shards. A run
is `complete` only when every shard of the universe is done, whichever `--shard I/N` runs did them, so
the union of sharded runs into one folder equals an unsharded run. Where the shards run (this process,
a process pool, a Ray cluster) is the executor's business (`executors`).
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from openmementos.runtime.atomic import atomic_write, leftovers
from openmementos.runtime.manifest import (
    DONE_DIR,
    MANIFEST,
    Manifest,
    ShardDone,
    StageError,
    done_marker,
    options_hash,
    read_manifest,
)
from openmementos.runtime.progress import StageProgress
from openmementos.runtime.selection import ALL_SHARDS, ShardSelection
from openmementos.runtime.shardio import QUARANTINE_DIR, QuarantineWriter, ShardWriter, parquet_rows

if TYPE_CHECKING:
    from openmementos.runtime.executors import Executor

S = TypeVar("S")
T = TypeVar("T")


@dataclass(frozen=True)
class ShardTask(Generic[S]):
    """One unit of work: read `source` (a path, an input file, ...), write `OUT_DIR/<name>.parquet`."""

    index: int
    name: str
    source: S


@dataclass(frozen=True)
class Quarantined:
    """What a stage yields for an input row it cannot process."""

    id: str
    reason: str
    detail: str
    record: BaseModel | dict[str, Any] | None = None


ProcessShard = Callable[[ShardTask[Any]], Iterable[BaseModel | Quarantined]]
"""Maps one shard task to its output records and quarantined rows, in order."""


def input_shards(in_dir: Path, selection: ShardSelection) -> tuple[list[str], list[Path]]:
    """The shard universe of a previous stage's output, and the paths this run must read.

    Refuses shards that the previous stage has not finished, so partial output is never taken for
    complete.
    """
    manifest = read_manifest(in_dir)
    picked = [name for index, name in enumerate(manifest.shards) if selection.picks(index)]
    missing = [name for name in picked if not done_marker(in_dir, name).exists()]
    if missing:
        raise StageError(
            f"{in_dir} is incomplete: {len(missing)} of the selected shards are not finished "
            f"(first: {missing[0]}). Finish the '{manifest.stage}' stage first (rerun it to resume)."
        )
    return manifest.shards, [in_dir / f"{name}.parquet" for name in picked]


def tasks_over(in_dir: Path, selection: ShardSelection) -> list[ShardTask[Path]]:
    """One task per shard of a previous stage's output (its parquet file as the source)."""
    universe, _ = input_shards(in_dir, selection)
    return [ShardTask(index, name, in_dir / f"{name}.parquet") for index, name in enumerate(universe)]


def shard_limits(tasks: Sequence[ShardTask[Path]], limit: int | None) -> dict[str, int] | None:
    """`--limit N` over the tasks a run picks: how many records each takes, the first N in shard order."""
    if limit is None:
        return None
    limits, left = {}, limit
    for task in tasks:
        limits[task.name] = min(parquet_rows(task.source), left)
        left -= limits[task.name]
    return limits


def first_of(records: Iterable[T], limits: dict[str, int] | None, shard: str) -> Iterator[T]:
    """A shard's records, only the first `limits[shard]` of them under `--limit` (all when None)."""
    return iter(records) if limits is None else itertools.islice(records, limits.get(shard, 0))


class RowReporter(Protocol):
    """Hears of every row a shard job finishes (written: reason None; quarantined: its reason)."""

    def row(self, reason: str | None) -> None: ...

    def flush(self) -> None: ...


@dataclass(frozen=True)
class ShardJob:
    """Process one shard task into the stage folder: rows, quarantine, then the done marker.

    This is what executors run, so it must pickle (its `process` is a top-level callable or a
    picklable object) unless the processor runs in one process only (see `Executor`).
    """

    stage: str
    out_dir: Path
    model: type[BaseModel]
    process: ProcessShard
    options_hash: str

    @property
    def in_one_process(self) -> bool:
        """Processors that hold live resources (an LLM engine on an event loop) cannot be shipped."""
        return bool(getattr(self.process, "in_one_process", False))

    def __call__(self, task: ShardTask[Any], reporter: RowReporter | None = None) -> ShardDone:
        started = time.monotonic()
        shard, quarantined = self.out_dir / f"{task.name}.parquet", self.out_dir / QUARANTINE_DIR / f"{task.name}.jsonl"
        for debris in (*leftovers(shard), *leftovers(quarantined)):  # of a run killed while writing this shard
            debris.unlink(missing_ok=True)
        writer = ShardWriter(shard, self.model)
        quarantine = QuarantineWriter(quarantined, self.stage)
        try:
            for item in self.process(task):
                if isinstance(item, Quarantined):
                    quarantine.write(item.id, item.reason, item.detail, item.record)
                else:
                    writer.write(item)
                if reporter is not None:
                    reporter.row(item.reason if isinstance(item, Quarantined) else None)
        except BaseException:
            writer.abort()
            quarantine.abort()
            raise
        writer.commit()
        quarantine.commit()
        if reporter is not None:
            reporter.flush()
        done = ShardDone(
            name=task.name,
            rows=writer.rows,
            quarantined=sum(quarantine.reasons.values()),
            reasons=dict(quarantine.reasons),
            seconds=round(time.monotonic() - started, 3),
            options_hash=self.options_hash,
        )
        atomic_write(done_marker(self.out_dir, task.name), done.model_dump_json())
        return done


@dataclass
class Stage:
    """A resumable stage: `process` maps one shard task to output records and quarantined rows.

    `options` are recorded in the manifest; resuming a folder made with other options is refused.
    """

    name: str
    out_dir: Path
    model: type[BaseModel]
    process: ProcessShard
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    status: Callable[[], str] | None = None
    """Optional live text shown under the progress bar (e.g. requests in flight, cost so far)."""

    def run(
        self,
        tasks: Sequence[ShardTask[Any]],
        selection: ShardSelection = ALL_SHARDS,
        executor: Executor | None = None,
    ) -> Manifest:
        from openmementos.runtime.executors import LocalExecutor

        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / DONE_DIR).mkdir(exist_ok=True)
        (self.out_dir / QUARANTINE_DIR).mkdir(exist_ok=True)
        digest = options_hash(self.options)
        self._check_resumable(digest, [t.name for t in tasks])
        done = self._done()
        todo = [t for t in tasks if selection.picks(t.index) and t.name not in done]
        self._write_manifest(tasks, digest)
        job = ShardJob(self.name, self.out_dir, self.model, self.process, digest)
        with StageProgress(self.description or self.name, len(todo), self.status) as progress:
            (executor or LocalExecutor()).run(job, todo, progress, lambda: self._write_manifest(tasks, digest))
        return self._write_manifest(tasks, digest)

    def _done(self) -> dict[str, ShardDone]:
        return {
            path.stem: ShardDone.model_validate_json(path.read_text())
            for path in sorted((self.out_dir / DONE_DIR).glob("part-*.json"))
        }

    def _check_resumable(self, digest: str, names: list[str]) -> None:
        path = self.out_dir / MANIFEST
        if not path.exists():
            return
        previous = Manifest.model_validate_json(path.read_text())
        if previous.stage != self.name or previous.options_hash != digest or previous.shards != names:
            raise StageError(
                f"{self.out_dir} holds a '{previous.stage}' run with other options or input; "
                "resume it with the same options, or write to a new folder"
            )

    def _write_manifest(self, tasks: Sequence[ShardTask[Any]], digest: str) -> Manifest:
        done = self._done()
        names = [t.name for t in tasks]
        manifest = Manifest(
            stage=self.name,
            options=json.loads(json.dumps(self.options, default=str)),
            options_hash=digest,
            shards_total=len(names),
            shards=names,
            done={name: done[name] for name in names if name in done},
            complete=all(name in done for name in names),
        )
        atomic_write(self.out_dir / MANIFEST, manifest.model_dump_json(indent=2))
        return manifest
