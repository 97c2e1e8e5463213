"""Parquet shards between stages, and the resumable per-shard stage runner.

A stage turns a universe of input shards into one output shard each, in `OUT_DIR`:

    OUT_DIR/part-00003.parquet            rows of the stage's record type
    OUT_DIR/quarantine/part-00003.jsonl   QuarantineRecord per rejected input row
    OUT_DIR/.done/part-00003.json         ShardSummary, written last: the shard is complete
    OUT_DIR/manifest.json                 the run: options, every shard's summary, `complete`

Files are written under a temporary name and renamed, and the done marker comes last, so a killed run
leaves either a finished shard or nothing that counts; a rerun skips finished shards. A run is
`complete` only when every shard of the universe is done, whichever `--shard I/N` runs did them, so the
union of sharded runs into one folder equals an unsharded run.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from openmementos.schema import QuarantineRecord, Record, arrow_schema

MANIFEST = "manifest.json"
DONE_DIR = ".done"
QUARANTINE_DIR = "quarantine"
ROW_GROUP_SIZE = 1000

R = TypeVar("R", bound=BaseModel)
S = TypeVar("S")


class StageError(RuntimeError):
    """A stage cannot run as asked (incomplete input, options that differ from a run to resume, ...)."""


# --------------------------------------------------------------------------- shard selection


@dataclass(frozen=True)
class ShardSelection:
    """`--shard I/N`: this run processes the shards whose index is I modulo N."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> ShardSelection:
        if not text:
            return cls()
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {text}: need 0 <= I < N")
        return cls(index, count)

    def picks(self, shard_index: int) -> bool:
        return shard_index % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# --------------------------------------------------------------------------- writing


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


class ShardWriter:
    """Streams records of one type into a parquet file, published atomically on `commit`."""

    def __init__(self, path: Path, model: type[BaseModel], row_group_size: int = ROW_GROUP_SIZE) -> None:
        self.path = path
        self.schema = arrow_schema(model)
        self.row_group_size = row_group_size
        self.rows = 0
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._buffer: list[dict[str, Any]] = []
        self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")

    def write(self, record: BaseModel | dict[str, Any]) -> None:
        self._buffer.append(record.model_dump() if isinstance(record, BaseModel) else record)
        self.rows += 1
        if len(self._buffer) >= self.row_group_size:
            self._flush()

    def _flush(self) -> None:
        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self.schema))
            self._buffer = []

    def commit(self) -> None:
        self._flush()
        self._writer.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


class QuarantineWriter:
    """Collects rejected rows of one shard into a JSONL file, published atomically on `commit`."""

    def __init__(self, path: Path, stage: str) -> None:
        self.path = path
        self.stage = stage
        self.reasons: Counter[str] = Counter()
        self._tmp = path.with_name(f".{path.name}.tmp")
        self._file = self._tmp.open("w")

    def write(self, item: Quarantined) -> None:
        record = item.record.model_dump() if isinstance(item.record, BaseModel) else item.record
        entry = QuarantineRecord(
            id=item.id,
            stage=self.stage,
            reason=item.reason,
            detail=item.detail,
            record=json.dumps(record, ensure_ascii=False, default=str),
        )
        self._file.write(entry.model_dump_json() + "\n")
        self.reasons[item.reason] += 1

    def commit(self) -> None:
        self._file.close()
        self._tmp.replace(self.path)

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- reading


def iter_rows(path: Path, columns: Sequence[str] | None = None, batch_size: int = 256) -> Iterator[dict[str, Any]]:
    """Rows of a parquet file as dicts, a batch at a time (memory stays flat)."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None):
        yield from batch.to_pylist()


def iter_records(path: Path, model: type[R]) -> Iterator[R]:
    """Rows of a parquet shard validated as `model` (its invariants are re-checked on read)."""
    fields = list(model.model_fields)
    for row in iter_rows(path, columns=[c for c in pq.read_schema(path).names if c in fields]):
        yield model.model_validate(row)


def read_quarantine(out_dir: Path) -> Iterator[QuarantineRecord]:
    for path in sorted((out_dir / QUARANTINE_DIR).glob("part-*.jsonl")):
        with path.open() as lines:
            for line in lines:
                yield QuarantineRecord.model_validate_json(line)


# --------------------------------------------------------------------------- manifests


class ShardSummary(Record):
    name: str
    rows: int
    quarantined: int
    reasons: dict[str, int]
    seconds: float
    options_hash: str


class Manifest(Record):
    stage: str
    options: dict[str, Any]
    options_hash: str
    shards_total: int
    shards: list[str]
    done: dict[str, ShardSummary]
    complete: bool

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.done.values())

    @property
    def quarantined(self) -> int:
        return sum(s.quarantined for s in self.done.values())

    def reasons(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for summary in self.done.values():
            total.update(summary.reasons)
        return total


def read_manifest(directory: Path) -> Manifest:
    path = directory / MANIFEST
    if not path.exists():
        raise StageError(f"{directory} has no {MANIFEST}: it is not the output of an openmementos stage")
    return Manifest.model_validate_json(path.read_text())


def options_hash(options: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


def shard_name(index: int) -> str:
    return f"part-{index:05d}"


def input_shards(in_dir: Path, selection: ShardSelection) -> tuple[list[str], list[Path]]:
    """The shard universe of a previous stage's output, and the paths this run must read.

    Refuses shards that the previous stage has not finished, so partial output is never taken for
    complete.
    """
    manifest = read_manifest(in_dir)
    picked = [name for index, name in enumerate(manifest.shards) if selection.picks(index)]
    missing = [name for name in picked if not (in_dir / DONE_DIR / f"{name}.json").exists()]
    if missing:
        raise StageError(
            f"{in_dir} is incomplete: {len(missing)} of the selected shards are not finished "
            f"(first: {missing[0]}). Finish the '{manifest.stage}' stage first (rerun it to resume)."
        )
    return manifest.shards, [in_dir / f"{name}.parquet" for name in picked]


def data_files(directory: Path) -> list[Path]:
    """The finished output shards of a stage folder, in order."""
    manifest = read_manifest(directory)
    return [directory / f"{name}.parquet" for name in manifest.shards if name in manifest.done]


def iter_stage(directory: Path, model: type[R]) -> Iterator[R]:
    """Every record of a stage folder's finished shards, in order, validated as `model`."""
    for path in data_files(directory):
        yield from iter_records(path, model)


# --------------------------------------------------------------------------- the stage runner


@dataclass(frozen=True)
class Quarantined:
    """What a stage yields for an input row it cannot process."""

    id: str
    reason: str
    detail: str
    record: BaseModel | dict[str, Any] | None = None


@dataclass(frozen=True)
class ShardTask(Generic[S]):
    """One unit of work: read `source` (a path, an input file, ...), write `OUT_DIR/<name>.parquet`."""

    index: int
    name: str
    source: S


ProcessShard = Callable[[ShardTask[Any]], Iterable[BaseModel | Quarantined]]


@dataclass
class Stage:
    """A resumable stage: `process` maps one shard task to output records and quarantined rows.

    `process` must be a picklable top-level callable (it runs in worker processes when workers > 1).
    `options` are recorded in the manifest; resuming a folder made with other options is refused.
    """

    name: str
    out_dir: Path
    model: type[BaseModel]
    process: ProcessShard
    options: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    description: str = ""
    status: Callable[[], str] | None = None
    """Optional live text shown after the progress bar (e.g. requests in flight, cost so far)."""

    def run(self, tasks: Sequence[ShardTask[Any]], selection: ShardSelection = ShardSelection()) -> Manifest:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        (self.out_dir / DONE_DIR).mkdir(exist_ok=True)
        (self.out_dir / QUARANTINE_DIR).mkdir(exist_ok=True)
        digest = options_hash(self.options)
        self._check_resumable(digest, [t.name for t in tasks])
        done = self._done()
        todo = [t for t in tasks if selection.picks(t.index) and t.name not in done]
        self._write_manifest(tasks, digest)
        with _StageProgress(self.description or self.name, todo, self.status) as progress:
            if self.workers <= 1 or len(todo) <= 1:
                for task in todo:
                    run_shard(self, task, digest, progress)
                    progress.shard_done()
                    self._write_manifest(tasks, digest)
            else:
                self._run_parallel(todo, tasks, digest, progress)
        return self._write_manifest(tasks, digest)

    def _run_parallel(
        self, todo: list[ShardTask[Any]], tasks: Sequence[ShardTask[Any]], digest: str, progress: _StageProgress
    ) -> None:
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        updates = context.SimpleQueue()
        with ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=_start_worker, initargs=(updates,)
        ) as pool:
            pending = {pool.submit(_run_shard_in_worker, self, task, digest) for task in todo}
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while not updates.empty():
                    progress.add(*updates.get())
                for future in finished:
                    future.result()  # re-raises a worker's error
                    progress.shard_done()
                    self._write_manifest(tasks, digest)

    def _done(self) -> dict[str, ShardSummary]:
        return {
            path.stem: ShardSummary.model_validate_json(path.read_text())
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
        _atomic_write_text(self.out_dir / MANIFEST, manifest.model_dump_json(indent=2))
        return manifest


def run_shard(stage: Stage, task: ShardTask[Any], digest: str, progress: RowReporter | None = None) -> ShardSummary:
    """Process one shard to completion: rows, quarantine, then the done marker."""
    started = time.monotonic()
    writer = ShardWriter(stage.out_dir / f"{task.name}.parquet", stage.model)
    quarantine = QuarantineWriter(stage.out_dir / QUARANTINE_DIR / f"{task.name}.jsonl", stage.name)
    try:
        for item in stage.process(task):
            if isinstance(item, Quarantined):
                quarantine.write(item)
            else:
                writer.write(item)
            if progress is not None:
                progress.row(item.reason if isinstance(item, Quarantined) else None)
    except BaseException:
        writer.abort()
        quarantine.abort()
        raise
    writer.commit()
    quarantine.commit()
    if progress is not None:
        progress.flush()
    summary = ShardSummary(
        name=task.name,
        rows=writer.rows,
        quarantined=sum(quarantine.reasons.values()),
        reasons=dict(quarantine.reasons),
        seconds=round(time.monotonic() - started, 3),
        options_hash=digest,
    )
    _atomic_write_text(stage.out_dir / DONE_DIR / f"{task.name}.json", summary.model_dump_json())
    return summary


class RowReporter(Protocol):
    def row(self, reason: str | None) -> None: ...

    def flush(self) -> None: ...


class _QueueReporter:
    """Row counts from a worker process, sent to the parent in batches (a message per row is too slow)."""

    def __init__(self, updates: Any, interval: float = 0.5) -> None:
        self.updates = updates
        self.interval = interval
        self._rows = 0
        self._reasons: Counter[str] = Counter()
        self._last = time.monotonic()

    def row(self, reason: str | None) -> None:
        self._rows += 1
        if reason:
            self._reasons[reason] += 1
        if time.monotonic() - self._last > self.interval:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self.updates.put((self._rows, dict(self._reasons)))
        self._rows, self._reasons, self._last = 0, Counter(), time.monotonic()


_worker_reporter: _QueueReporter | None = None


def _start_worker(updates: Any) -> None:
    global _worker_reporter
    _worker_reporter = _QueueReporter(updates)


def _run_shard_in_worker(stage: Stage, task: ShardTask[Any], digest: str) -> ShardSummary:
    return run_shard(stage, task, digest, _worker_reporter)


def _progress_with_status(status: Callable[[], str]) -> Any:
    """A rich `Progress` class that shows `status()` on a line under the bar, at every refresh."""
    from rich.progress import Progress
    from rich.text import Text

    class ProgressWithStatus(Progress):
        def get_renderables(self) -> Any:
            yield from super().get_renderables()
            yield Text(status(), overflow="ellipsis", no_wrap=True)

    return ProgressWithStatus


class _StageProgress:
    """A rich progress bar: shards done, rows/s and the most frequent quarantine reasons."""

    def __init__(
        self, description: str, todo: Sequence[ShardTask[Any]], status: Callable[[], str] | None = None
    ) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.rows = 0
        self.reasons: Counter[str] = Counter()
        self.started = self._refreshed = time.monotonic()
        progress_class = _progress_with_status(status) if status is not None else Progress
        self._progress = progress_class(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards · {task.fields[rows]} rows · {task.fields[rate]} rows/s {task.fields[reasons]}"),
            TimeElapsedColumn(),
            disable=not todo,
        )
        self._task = self._progress.add_task(description, total=len(todo), rows=0, rate="0", reasons="")

    def __enter__(self) -> _StageProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._update()
        self._progress.stop()

    def row(self, reason: str | None) -> None:
        self.rows += 1
        if reason:
            self.reasons[reason] += 1
        if time.monotonic() - self._refreshed > 0.2:
            self._update()

    def flush(self) -> None:
        self._update()

    def add(self, rows: int, reasons: dict[str, int]) -> None:
        self.rows += rows
        self.reasons.update(reasons)
        self._update()

    def shard_done(self) -> None:
        self._update()
        self._progress.advance(self._task)

    def _update(self) -> None:
        self._refreshed = time.monotonic()
        rate = self.rows / max(self._refreshed - self.started, 1e-9)
        reasons = ", ".join(f"{k}: {v}" for k, v in self.reasons.most_common(4))
        self._progress.update(
            self._task,
            rows=f"{self.rows:,}",
            rate=f"{rate:,.0f}",
            reasons=f"· quarantined {reasons}" if reasons else "",
        )
