"""The download stage: resolve the input, plan the selection, then convert and filter file by file.

Each input file becomes one output shard (`part-NNNNN.parquet` of `SourceTrace` rows) through
`runtime.stage.Stage`, which gives resumability, `--shard I/N` and the quarantine. A row ends in exactly one
place, and the manifest accounts for all of them:

- written: converted and passed the filters;
- quarantined: with the reason (structural reasons from `SourceTrace.from_openthoughts`, the filter
  reasons of `filters.py`, `unreadable` for undecodable lines). The quarantine record points at the
  input row (file and row index, plus its metadata) instead of copying it: the Hub input is pinned to
  a commit, and copying would make OpenThoughts3's quarantine about as large as the dataset;
- not selected by the stratified selection: not errors, so not quarantined one by one, but counted
  per domain in the manifest (`options.selection`, which also holds the whole plan).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openmementos.download.filters import Filters
from openmementos.download.mapping import ColumnMapping
from openmementos.download.readers import (
    InputFile,
    Row,
    Unreadable,
    column_names,
    hub_input,
    iter_rows,
    local_input,
    sample_input,
)
from openmementos.download.request import DEFAULT_DATASET, STAGE, DownloadRequest
from openmementos.download.sampling import (
    BoundFinder,
    SelectionPlan,
    SelectionRequest,
    Stratum,
    StratumCounts,
    allocate,
)
from openmementos.download.strata import file_strata
from openmementos.runtime.manifest import MANIFEST, Manifest, StageError, read_manifest, shard_name
from openmementos.runtime.progress import FileProgress
from openmementos.runtime.stage import Quarantined, ShardTask, Stage
from openmementos.schema import SourceTrace, TraceRejected


@dataclass(frozen=True)
class ShardSource:
    """What a worker needs to convert one input file (pickled into the worker process)."""

    file: InputFile
    file_index: int
    mapping: ColumnMapping
    filters: Filters
    plan: SelectionPlan | None


@dataclass(frozen=True)
class DownloadResult:
    manifest: Manifest
    plan: SelectionPlan | None


def run_download(request: DownloadRequest) -> DownloadResult:
    files, input_json = _resolve_input(request)
    if input_json["kind"] == "hub":
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()  # the stage's bar shows progress; per-file bars from workers would garble it
    mapping = request.mapping().resolve(column_names(files[0]))
    filters, selection = request.filters(), request.selection()
    options: dict[str, Any] = {
        "input": input_json,
        "mapping": mapping.as_json(),
        "filters": asdict(filters),
        "selection_request": selection.as_json() if selection else None,
    }
    previous = _previous_options(request.out_dir, options)
    plan = None
    if selection is not None:
        if previous is not None:
            plan = SelectionPlan.from_json(previous["selection"])
        else:
            plan = make_plan(files, mapping, selection)
        options["selection"] = plan.as_json()
    tasks = [
        ShardTask(index, shard_name(index), ShardSource(file, index, mapping, filters, plan))
        for index, file in enumerate(files)
    ]
    stage = Stage(STAGE, request.out_dir, SourceTrace, convert_shard, options=options, description="download")
    executor = request.make_executor(default_workers=min(8, os.cpu_count() or 1))
    return DownloadResult(stage.run(tasks, request.shard, executor), plan)


def _resolve_input(request: DownloadRequest) -> tuple[list[InputFile], dict[str, Any]]:
    if request.sample:
        files = sample_input()
        return files, {"kind": "sample", "files": [f.label for f in files]}
    if request.input is not None:
        files = local_input(request.input, request.split)
        return files, {"kind": "local", "path": str(request.input.resolve()), "files": [f.label for f in files]}
    dataset = request.dataset or DEFAULT_DATASET
    hub = hub_input(dataset, request.revision, request.config, request.split)
    if not hub.files:
        raise ValueError(f"dataset {dataset} has no data files in split {request.split!r}")
    input_json = {
        "kind": "hub",
        "dataset": hub.repo_id,
        "revision": request.revision,
        "commit": hub.commit,
        "config": request.config,
        "split": request.split,
        "files": [f.label for f in hub.files],
    }
    return hub.files, input_json


def _previous_options(out_dir: Path, options: dict[str, Any]) -> dict[str, Any] | None:
    """The options of the run being resumed in `out_dir` (None for a new folder).

    Refuses a folder made with other options before any planning, naming what differs.
    """
    if not (out_dir / MANIFEST).exists():
        return None
    previous = read_manifest(out_dir)
    mine = json.loads(json.dumps(options, default=str))
    compared = (set(mine) | set(previous.options)) - {"selection"}  # the plan follows from the other options
    differing = sorted(key for key in compared if mine.get(key) != previous.options.get(key))
    if previous.stage != STAGE or differing:
        raise StageError(
            f"{out_dir} holds a '{previous.stage}' run made with other {', '.join(differing) or 'options'}: "
            "resume it with the same options, or write to a new folder"
        )
    return previous.options


def make_plan(files: list[InputFile], mapping: ColumnMapping, request: SelectionRequest) -> SelectionPlan:
    """Two passes over the metadata columns of every file: stratum sizes, then per-stratum hash bounds."""
    counts = StratumCounts()
    with FileProgress("selection: counting strata", len(files)) as progress:
        for file in files:
            strata = file_strata(file, mapping)
            counts.add_file((group.stratum, group.rows) for group in strata)
            progress.file_done(sum(group.rows for group in strata))
    quotas, summary = allocate(counts, request)
    finder = BoundFinder(request.seed, quotas, counts.sizes)
    if finder.needed:
        with FileProgress(f"selection: drawing (seed {request.seed})", len(files)) as progress:
            for file in files:
                strata = file_strata(file, mapping, indices=True)
                for group in strata:
                    if finder.wants(group.stratum):
                        finder.add(group.stratum, row_keys(file, group.indices or ()))
                progress.file_done(sum(group.rows for group in strata))
    return SelectionPlan(
        request.seed,
        finder.bounds(),
        quotas,
        dict(counts.sizes),
        tuple(counts.file_rows),
        {"request": request.as_json(), **summary},
    )


def _stratum(mapping: ColumnMapping, row: Row) -> Stratum | None:
    return None if isinstance(row, Unreadable) else mapping.stratum(row)


def row_key(file: InputFile, index: int) -> str:
    """A row's name in the selection hash and the quarantine: its file and row index (line, for JSON lines)."""
    return row_keys(file, (index,))[0]


def row_keys(file: InputFile, indices: Iterable[int]) -> list[str]:
    """`row_key` of many rows of a file."""
    prefix = f"{file.label}#"
    return [f"{prefix}{index}" for index in indices]


def convert_shard(task: ShardTask[ShardSource]) -> Iterator[SourceTrace | Quarantined]:
    """Rows of one input file, selected, converted and filtered (the stage's `process`)."""
    source = task.source
    mapping, plan = source.mapping, source.plan
    rows = 0
    for index, row in iter_rows(source.file, mapping.columns()):
        rows += 1
        key = row_key(source.file, index)
        if plan is not None and not _selected(plan, _stratum(mapping, row), key):
            continue
        yield _convert(row, key, {"file": source.file.label, "row": index}, mapping, source.filters)
    if plan is not None and rows != plan.file_rows[source.file_index]:
        raise StageError(
            f"{source.file.label} has {rows} rows but had {plan.file_rows[source.file_index]} when the selection "
            "was planned: the input changed; start again in a new folder"
        )


def _selected(plan: SelectionPlan, stratum: Stratum | None, key: str) -> bool:
    if stratum is None:
        return True  # no usable domain: always passed on, so it is quarantined with its reason
    try:
        return plan.selects(stratum, key)
    except KeyError:
        raise StageError(
            f"row {key} is in stratum {stratum}, unknown to the selection plan: the input changed since it "
            "was planned; start again in a new folder"
        ) from None


def _convert(
    row: Row, key: str, pointer: dict[str, Any], mapping: ColumnMapping, filters: Filters
) -> SourceTrace | Quarantined:
    if isinstance(row, Unreadable):
        return Quarantined(key, "unreadable", row.detail, {**pointer, "text": row.text})
    try:
        trace = mapping.to_trace(row)
        filters.check(trace)
    except TraceRejected as rejected:
        return Quarantined(key, rejected.reason, rejected.detail, {**pointer, **mapping.metadata(row)})
    return trace
