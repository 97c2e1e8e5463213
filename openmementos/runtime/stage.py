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
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from openmementos.runtime.atomic import atomic_write, dead_leftovers, leftovers
from openmementos.runtime.manifest import (
    DONE_DIR,
    LLM_CACHE_DIR,
    MANIFEST,
    Manifest,
    ShardDone,
    StageError,
    UnreadableSource,
    done_marker,
    options_hash,
    read_input,
    read_manifest,
    require_finished,
)
from openmementos.runtime.progress import StageProgress
from openmementos.runtime.selection import ALL_SHARDS, ShardSelection
from openmementos.runtime.shardio import QUARANTINE_DIR, QuarantineWriter, ShardWriter, iter_records, parquet_rows

if TYPE_CHECKING:
    from openmementos.runtime.executors import Executor

R = TypeVar("R", bound=BaseModel)
S = TypeVar("S")
T = TypeVar("T")


TRIAL_LIMIT = "limit"
"""The option that sizes a trial run (`--limit N`: the first N input rows, in shard order).

A rerun into the same folder may raise it or drop it: the shards it cut short are redone (an LLM stage
replays the answers it paid for from its cache) and the others are kept. Any other option must match.
"""
UNREADABLE = "unreadable_file"
"""The quarantine reason of an input that could not be read at all."""


@dataclass(frozen=True)
class ShardTask(Generic[S]):
    """One unit of work: read `source` (a path, an input file, ...), write `OUT_DIR/<name>.parquet`."""

    index: int
    name: str
    source: S
    origin: Path | None = None
    """The stage folder `source` comes from (recorded in the manifest: the lineage of a stage folder)."""


@dataclass(frozen=True)
class Quarantined:
    """What a stage yields for an input row it cannot process."""

    id: str
    reason: str
    detail: str
    record: BaseModel | dict[str, Any] | None = None


class UnreadableInput(Exception):
    """Raised by a shard processor whose input cannot be read at all (corrupt, truncated, another format).

    The shard is then written empty, the input quarantined by name with `reason`, and the run goes on; a
    rerun does not read it again unless asked to (`Stage.retry_unreadable`).
    """

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(source, reason)
        self.source = source
        self.reason = reason

    def __str__(self) -> str:
        return f"{self.source}: {self.reason}"


ProcessShard = Callable[[ShardTask[Any]], Iterable[BaseModel | Quarantined]]
"""Maps one shard task to its output records and quarantined rows, in order."""


def input_shards(
    in_dir: Path, selection: ShardSelection, *, reader: str, expects: str | tuple[str, ...]
) -> tuple[list[str], list[Path]]:
    """The shard universe of a previous stage's output, and the paths this run must read.

    Refuses (in one line, before anything is created) a folder that is not the output of `expects`, and
    shards that the previous stage has not finished, so partial output is never taken for complete.
    """
    manifest = read_input(in_dir, reader=reader, expects=expects)
    picked = [name for index, name in enumerate(manifest.shards) if selection.picks(index)]
    require_finished(in_dir, manifest, picked)
    return manifest.shards, [in_dir / f"{name}.parquet" for name in picked]


def tasks_over(
    in_dir: Path, selection: ShardSelection, *, reader: str, expects: str | tuple[str, ...]
) -> list[ShardTask[Path]]:
    """One task per shard of a previous stage's output (its parquet file as the source)."""
    universe, _ = input_shards(in_dir, selection, reader=reader, expects=expects)
    return [ShardTask(index, name, in_dir / f"{name}.parquet", in_dir) for index, name in enumerate(universe)]


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


# --------------------------------------------------------------------------- resuming a folder


def _flat(options: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in options.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _shown(value: Any) -> str:
    text = "none" if value is None else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def option_changes(recorded: dict[str, Any], given: dict[str, Any], ignore: Sequence[str] = ()) -> list[str]:
    """What a rerun changes in the options a folder was made with, each as `name was OLD, now NEW`.

    `TRIAL_LIMIT` may grow or be dropped; shrinking it is a change. Keys under `ignore` (and the keys
    nested in them) are not compared.
    """
    old, new = _flat(recorded), _flat(json.loads(json.dumps(given, default=str)))
    skipped = tuple(ignore)
    changes = []
    for key in sorted(set(old) | set(new)):
        before, after = old.get(key), new.get(key)
        if key.split(".")[0] in skipped or before == after or (key == TRIAL_LIMIT and _grows(before, after)):
            continue
        changes.append(f"{key} was {_shown(before)}, now {_shown(after)}")
    return changes


def _grows(old: Any, new: Any) -> bool:
    """Whether a trial limit `new` continues a run made with `old` (None: every row)."""
    return new is None or (old is not None and new >= old)


def check_resumable(
    out_dir: Path, stage: str, options: dict[str, Any], shards: Sequence[str], ignore: Sequence[str] = ()
) -> Manifest | None:
    """The run in `out_dir` that a run of `stage` with `options` over `shards` continues (None: a new folder).

    Refuses, before anything is written, a folder holding another stage's output, or a run made with
    other options (naming each, with the old and the new value; options under `ignore` are not compared)
    or over another input.
    """
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise StageError(f"{out_dir} is a file; write to a new folder")
    if not (out_dir / MANIFEST).exists():
        return None
    previous = read_manifest(out_dir)
    if previous.stage != stage:
        raise StageError(f"{out_dir} holds the output of `{previous.stage}`, not of `{stage}`; write to a new folder")
    changes = option_changes(previous.options, options, ignore)
    if changes:
        grows = f" (a larger --{TRIAL_LIMIT}, or none, continues it)" if TRIAL_LIMIT in options else ""
        cache = out_dir / LLM_CACHE_DIR
        reuse = f" (a new folder reuses the LLM answers paid here with --cache-dir {cache})" if cache.is_dir() else ""
        raise StageError(
            f"{out_dir} holds a `{stage}` run made with other options: {'; '.join(changes)}. Rerun with its "
            f"options{grows}, or write to a new folder{reuse}"
        )
    if list(previous.shards) != list(shards):
        raise StageError(
            f"{out_dir} holds a `{stage}` run over {len(previous.shards)} input shards, but the input now has "
            f"{len(shards)}: it changed since; write to a new folder"
        )
    return previous


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
    taken: dict[str, int] = field(default_factory=dict)
    """Input rows each shard covers, for stages with a trial limit (recorded in the done marker)."""

    @property
    def in_one_process(self) -> bool:
        """Processors that hold live resources (an LLM engine on an event loop) cannot be shipped."""
        return bool(getattr(self.process, "in_one_process", False))

    def __call__(self, task: ShardTask[Any], reporter: RowReporter | None = None) -> ShardDone:
        started = time.monotonic()
        shard, quarantined = self.out_dir / f"{task.name}.parquet", self.out_dir / QUARANTINE_DIR / f"{task.name}.jsonl"
        for debris in (*leftovers(shard), *leftovers(quarantined)):  # of a run killed while writing this shard
            debris.unlink(missing_ok=True)
        done_marker(self.out_dir, task.name).unlink(missing_ok=True)  # a shard redone counts only once finished
        writer = ShardWriter(shard, self.model)
        quarantine = QuarantineWriter(quarantined, self.stage)
        unreadable = None
        try:
            for item in self.process(task):
                if isinstance(item, Quarantined):
                    quarantine.write(item.id, item.reason, item.detail, item.record)
                else:
                    writer.write(item)
                if reporter is not None:
                    reporter.row(item.reason if isinstance(item, Quarantined) else None)
        except UnreadableInput as error:  # the whole input is quarantined: what was read of it is dropped
            writer.abort()
            quarantine.abort()
            writer, quarantine = ShardWriter(shard, self.model), QuarantineWriter(quarantined, self.stage)
            quarantine.write(error.source, UNREADABLE, error.reason, {"source": error.source})
            unreadable = UnreadableSource(source=error.source, reason=error.reason)
            if reporter is not None:
                reporter.row(UNREADABLE)
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
            taken=self.taken.get(task.name),
            unreadable=unreadable,
        )
        atomic_write(done_marker(self.out_dir, task.name), done.model_dump_json())
        return done


@dataclass
class Stage:
    """A resumable stage: `process` maps one shard task to output records and quarantined rows.

    `options` are recorded in the manifest; resuming a folder made with other options is refused
    (`check_resumable`), except for a larger `TRIAL_LIMIT`, which redoes the shards it cut short.
    """

    name: str
    out_dir: Path
    model: type[BaseModel]
    process: ProcessShard
    options: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    status: Callable[[], str] | None = None
    """Optional live text shown under the progress bar (e.g. requests in flight, cost so far)."""
    retry_unreadable: bool = False
    """Read again the inputs an earlier run found unreadable (by default a rerun leaves them quarantined)."""

    def run(
        self,
        tasks: Sequence[ShardTask[Any]],
        selection: ShardSelection = ALL_SHARDS,
        executor: Executor | None = None,
    ) -> Manifest:
        from openmementos.runtime.executors import LocalExecutor

        check_resumable(self.out_dir, self.name, self.options, [t.name for t in tasks])
        picked = [t for t in tasks if selection.picks(t.index)]
        taken = self._taken(picked)
        done = self._done()
        todo = [t for t in picked if self._needs_run(done.get(t.name), taken.get(t.name))]
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / DONE_DIR).mkdir(exist_ok=True)
        (self.out_dir / QUARANTINE_DIR).mkdir(exist_ok=True)
        digest = options_hash({k: v for k, v in self.options.items() if k != TRIAL_LIMIT})
        for debris in dead_leftovers(self.out_dir / MANIFEST):  # of a run killed while writing the manifest
            debris.unlink(missing_ok=True)
        self._write_manifest(tasks, digest)
        job = ShardJob(self.name, self.out_dir, self.model, self.process, digest, taken)
        with StageProgress(self.description or self.name, len(todo), self.status) as progress:
            (executor or LocalExecutor()).run(job, todo, progress, lambda: self._write_manifest(tasks, digest))
        return self._write_manifest(tasks, digest)

    def _taken(self, picked: Sequence[ShardTask[Any]]) -> dict[str, int]:
        """Input rows each picked shard covers, for a stage with a trial limit (its sources are parquet files)."""
        if TRIAL_LIMIT not in self.options:
            return {}
        limits = shard_limits(picked, self.options[TRIAL_LIMIT])
        return limits if limits is not None else {task.name: parquet_rows(task.source) for task in picked}

    def _needs_run(self, done: ShardDone | None, taken: int | None) -> bool:
        if done is None:
            return True
        if done.unreadable is not None:
            return self.retry_unreadable
        return taken is not None and done.taken is not None and taken > done.taken

    def _done(self) -> dict[str, ShardDone]:
        return {
            path.stem: ShardDone.model_validate_json(path.read_text())
            for path in sorted((self.out_dir / DONE_DIR).glob("part-*.json"))
        }

    def _write_manifest(self, tasks: Sequence[ShardTask[Any]], digest: str) -> Manifest:
        done = self._done()
        names = [t.name for t in tasks]
        finished = {name: done[name] for name in names if name in done}
        origin = next((task.origin for task in tasks if task.origin is not None), None)
        manifest = Manifest(
            stage=self.name,
            options=json.loads(json.dumps(self.options, default=str)),
            options_hash=digest,
            shards_total=len(names),
            shards=names,
            done=finished,
            complete=all(name in done for name in names),
            in_dir=str(origin.resolve()) if origin is not None else None,
            unreadable=[d.unreadable for d in finished.values() if d.unreadable is not None],
        )
        atomic_write(self.out_dir / MANIFEST, manifest.model_dump_json(indent=2))
        return manifest


def sample_records(
    in_dir: Path, selection: ShardSelection, limit: int | None, reader: str, expects: str, record: type[R], size: int
) -> tuple[Iterator[R], int]:
    """Up to `size` records spread over the selected shards of `in_dir` (for an estimate), and how many a run
    with this selection and `limit` reads."""
    tasks = tasks_over(in_dir, selection, reader=reader, expects=expects)
    picked = [task for task in tasks if selection.picks(task.index)]
    limits = shard_limits(picked, limit)
    rows = {task.name: limits[task.name] if limits else parquet_rows(task.source) for task in picked}
    per_shard = math.ceil(size / max(len(picked), 1))
    sample = itertools.chain.from_iterable(
        itertools.islice(iter_records(task.source, record), min(per_shard, rows[task.name])) for task in picked
    )
    return itertools.islice(sample, size), sum(rows.values())
