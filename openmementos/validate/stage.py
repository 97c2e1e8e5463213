"""The validate stage: annotated shards in; the traces that pass every rule out, the others quarantined.

It writes the passing traces to its output folder (same shard names) and the others to `quarantine/`,
each with *every* rule it broke: the quarantine `reason` lists the rule codes (comma-separated) and
`detail` has one line per rule. `publish` only reads a finished `validate` folder, so nothing
unvalidated can reach a published dataset. Duplicates are found by a first pass over the `id` column of
every input shard, so the first occurrence of an id (in shard order) is kept.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from openmementos.runtime.manifest import Manifest, StageError
from openmementos.runtime.selection import ALL_SHARDS
from openmementos.runtime.shardio import iter_parquet_rows
from openmementos.runtime.stage import Quarantined, ShardTask, Stage, input_shards
from openmementos.schema import AnnotatedTrace
from openmementos.validate.report import ValidationReport, build_report
from openmementos.validate.request import STAGE, ValidateRequest
from openmementos.validate.rules import Failure, ValidationRules, check_row


@dataclass(frozen=True)
class ShardInput:
    """One input shard and the row numbers in it whose id already appeared earlier."""

    path: Path
    duplicate_rows: frozenset[int] = field(default_factory=frozenset)


def validate_shard(task: ShardTask[ShardInput], rules: ValidationRules) -> Iterator[AnnotatedTrace | Quarantined]:
    """Pass each row of a shard through `check_row`: the trace, or the row quarantined with every failure."""
    for number, row in enumerate(iter_parquet_rows(task.source.path)):
        trace, failures = check_row(row, rules)
        if number in task.source.duplicate_rows:
            failures.insert(0, Failure("duplicate_id", f"id {row.get('id')!r} already appeared in an earlier row"))
        if trace is not None and not failures:
            yield trace
        else:
            yield Quarantined(
                id=str(row.get("id", f"{task.name}#{number}")),
                reason=",".join(f.rule for f in failures),
                detail="\n".join(map(str, failures)),
                record=row,
            )


def find_duplicates(paths: Sequence[Path]) -> dict[Path, frozenset[int]]:
    """Row numbers, per shard, whose id appeared in an earlier row (shard order, then row order)."""
    seen: set[str] = set()
    duplicates: dict[Path, frozenset[int]] = {}
    for path in paths:
        rows = set()
        for number, row in enumerate(iter_parquet_rows(path, columns=["id"], batch_size=8192)):
            if row["id"] in seen:
                rows.add(number)
            seen.add(row["id"])
        duplicates[path] = frozenset(rows)
    return duplicates


@dataclass(frozen=True)
class ValidateResult:
    manifest: Manifest
    report: ValidationReport


def run_validate(request: ValidateRequest) -> ValidateResult:
    """Validate every trace of a finished annotate folder into `out_dir` (resumable per shard)."""
    in_dir, out_dir, rules = request.in_dir, request.out_dir, request.rules()
    if out_dir.resolve() == in_dir.resolve():
        raise StageError(f"write the validated traces to a new folder, not into {in_dir} itself")
    # Every input shard, also under --shard: an id's first occurrence wins, whichever run validates it.
    names, paths = input_shards(in_dir, ALL_SHARDS, reader=STAGE, expects="annotate")
    duplicates = find_duplicates(paths)
    tasks = [
        ShardTask(index, name, ShardInput(path, duplicates[path]), in_dir)
        for index, (name, path) in enumerate(zip(names, paths, strict=True))
    ]
    stage = Stage(
        name=STAGE,
        out_dir=out_dir,
        model=AnnotatedTrace,
        process=partial(validate_shard, rules=rules),
        options={"in_dir": str(in_dir.resolve()), **rules.model_dump()},
        description="validate",
    )
    manifest = stage.run(tasks, request.shard, request.make_executor())
    report = build_report(manifest, out_dir)
    if request.report is not None:
        request.report.parent.mkdir(parents=True, exist_ok=True)
        request.report.write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return ValidateResult(manifest, report)
