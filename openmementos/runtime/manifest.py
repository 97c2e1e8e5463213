"""What a stage folder holds, and reading one stage's output as the next stage's input.

OUT_DIR/part-00003.parquet            rows of the stage's record type
OUT_DIR/quarantine/part-00003.jsonl   one QuarantineRecord per rejected input row
OUT_DIR/.done/part-00003.json         ShardDone, written last: the shard is complete
OUT_DIR/manifest.json                 the run: stage, options, the folder it read, every shard's ShardDone,
                                      the input files it could not read, `complete`
OUT_DIR/.llm/                         the LLM answers cache (stages that call an LLM, unless --cache-dir)

A stage reads its input folder through `read_input`, which refuses, in one line, a folder that is not
the output of the stage it expects, or that stage's unfinished run.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, Field, ValidationError

from openmementos.runtime.shardio import iter_records
from openmementos.schema import Record

MANIFEST = "manifest.json"
DONE_DIR = ".done"
LLM_CACHE_DIR = ".llm"

R = TypeVar("R", bound=BaseModel)


class StageError(RuntimeError):
    """A stage cannot run as asked (incomplete input, options that differ from a run to resume, ...)."""


class UnreadableSource(Record):
    """An input that could not be read at all (a corrupt, truncated or mistyped file), and the reader's reason."""

    source: str
    reason: str


class ShardDone(Record):
    """The done marker of one output shard: what it holds and how long it took."""

    name: str
    rows: int
    quarantined: int
    reasons: dict[str, int]
    seconds: float
    options_hash: str
    taken: int | None = None
    """Input rows this shard covers, for stages with a trial `limit` (a larger limit redoes the shard)."""
    unreadable: UnreadableSource | None = None
    """Set when the shard's input could not be read: the shard is empty and the input quarantined."""


class Manifest(Record):
    stage: str
    options: dict[str, Any]
    options_hash: str
    shards_total: int
    shards: list[str]
    done: dict[str, ShardDone]
    complete: bool
    in_dir: str | None = None
    """The stage folder this run read (None for a stage that reads outside inputs, like download)."""
    unreadable: list[UnreadableSource] = Field(default_factory=list)
    """Inputs that could not be read (each quarantined whole); a rerun skips them unless asked to retry."""

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
    try:
        return Manifest.model_validate_json(path.read_text())
    except (ValidationError, UnicodeDecodeError) as error:
        raise StageError(f"{path} is not a manifest openmementos can read ({_first_line(error)})") from None


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def _named(stages: str | tuple[str, ...]) -> str:
    return " or ".join(f"`{stage}`" for stage in ((stages,) if isinstance(stages, str) else stages))


def read_input(directory: Path, *, reader: str, expects: str | tuple[str, ...]) -> Manifest:
    """The manifest of the stage folder `reader` reads, which must hold the output of a stage in `expects`.

    Refuses in one line, naming what the folder holds and what `reader` expects, before the reader creates
    anything. Whether the run in it is finished is `require_finished`' business (`--shard` runs read only
    their own shards).
    """
    wanted = f"{reader} reads the output of {_named(expects)}"
    if not directory.is_dir():
        raise StageError(f"{directory} is not a folder; {wanted}")
    if not (directory / MANIFEST).exists():
        raise StageError(f"{directory} is not a stage folder (it has no {MANIFEST}); {wanted}")
    manifest = read_manifest(directory)
    if manifest.stage not in ((expects,) if isinstance(expects, str) else expects):
        raise StageError(f"{directory} holds the output of `{manifest.stage}`; {wanted}")
    return manifest


def require_finished(directory: Path, manifest: Manifest, names: list[str]) -> None:
    """Refuse when any of the shards `names` of the run in `directory` is not finished."""
    missing = [name for name in names if not done_marker(directory, name).exists()]
    if missing:
        raise StageError(
            f"{directory} holds an unfinished `{manifest.stage}` run: {len(missing)} of {len(names)} shards are "
            f"not done (first: {missing[0]}); rerun `openmementos {manifest.stage}` into it to finish it first"
        )


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
