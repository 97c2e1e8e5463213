"""What a stage folder holds, and reading one stage's output as the next stage's input.

OUT_DIR/part-00003.parquet            rows of the stage's record type
OUT_DIR/quarantine/part-00003.jsonl   one QuarantineRecord per rejected input row
OUT_DIR/.done/part-00003.json         ShardDone, written last: the shard is complete
OUT_DIR/manifest.json                 the run: stage, options, every shard's ShardDone, `complete`
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from openmementos.runtime.shardio import iter_records
from openmementos.schema import Record

MANIFEST = "manifest.json"
DONE_DIR = ".done"

R = TypeVar("R", bound=BaseModel)


class StageError(RuntimeError):
    """A stage cannot run as asked (incomplete input, options that differ from a run to resume, ...)."""


class ShardDone(Record):
    """The done marker of one output shard: what it holds and how long it took."""

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
    done: dict[str, ShardDone]
    complete: bool

    @property
    def rows(self) -> int:
        return sum(s.rows for s in self.done.values())

    @property
    def quarantined(self) -> int:
        return sum(s.quarantined for s in self.done.values())

    def reasons(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for done in self.done.values():
            total.update(done.reasons)
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


def done_marker(directory: Path, shard: str) -> Path:
    return directory / DONE_DIR / f"{shard}.json"


def data_files(directory: Path) -> list[Path]:
    """The finished output shards of a stage folder, in order."""
    manifest = read_manifest(directory)
    return [directory / f"{name}.parquet" for name in manifest.shards if name in manifest.done]


def iter_stage(directory: Path, model: type[R]) -> Iterator[R]:
    """Every record of a stage folder's finished shards, in order, validated as `model`."""
    for path in data_files(directory):
        yield from iter_records(path, model)
