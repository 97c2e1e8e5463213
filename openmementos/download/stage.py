"""The download stage: resolve the input, plan the selection, then convert and filter file by file.

Each input file becomes one output shard (`part-NNNNN.parquet` of `SourceTrace` rows) through
`runtime.stage.Stage`, which gives resumability, `--shard I/N` and the quarantine. A row ends in exactly one
place, and the manifest accounts for all of them:

- written: converted and passed the filters;
- quarantined: with the reason (structural reasons from `SourceTrace.from_openthoughts`, the filter
  reasons of `filters.py`, `unreadable` for undecodable lines). The quarantine record points at the
  input row (file and row index, plus its metadata) instead of copying it: the Hub input is pinned to
  a commit, and copying would make OpenThoughts3's quarantine about as large as the dataset;
- in a file that cannot be read at all (corrupt, truncated, another format): the file is quarantined
  by name with the reader's reason (`unreadable_file`; the manifest lists it under `unreadable`), its
  shard is empty and the run goes on. A rerun leaves it alone unless `retry_unreadable`;
- not selected by the stratified selection: not errors, so not quarantined one by one, but counted
  per domain in the manifest (`options.selection`, which also holds the whole plan).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from openmementos.download.filters import Filters
from openmementos.download.mapping import ColumnMapping
from openmementos.download.readers import (
    SAMPLE_LICENSE,
    InputFile,
    Row,
    Unreadable,
    column_names,
    has_rows,
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
from openmementos.runtime.manifest import Manifest, StageError, shard_name
from openmementos.runtime.progress import FileProgress
from openmementos.runtime.stage import Quarantined, ShardTask, Stage, UnreadableInput, check_resumable
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
    mapping = request.mapping().resolve(probe_columns(files))
    filters, selection = request.filters(), request.selection()
    options: dict[str, Any] = {
        "input": input_json,
        "mapping": mapping.as_json(),
        "filters": asdict(filters),
        "selection_request": selection.as_json() if selection else None,
    }
    shards = [shard_name(index) for index in range(len(files))]
    # Refuses a folder made with other options before any planning, naming what differs (the plan
    # follows from the other options).
    previous = check_resumable(request.out_dir, STAGE, options, shards, ignore=("selection",))
    plan = None
    if selection is not None:
        if previous is not None:
            plan = SelectionPlan.from_json(previous.options["selection"])
        else:
            plan = make_plan(files, mapping, selection)
        options["selection"] = plan.as_json()
    tasks = [
        ShardTask(index, name, ShardSource(file, index, mapping, filters, plan))
        for index, (name, file) in enumerate(zip(shards, files, strict=True))
    ]
    stage = Stage(
        STAGE,
        request.out_dir,
        SourceTrace,
        convert_shard,
        options=options,
        description="download",
        retry_unreadable=request.retry_unreadable,
    )
    executor = request.make_executor(default_workers=min(8, os.cpu_count() or 1))
    return DownloadResult(stage.run(tasks, request.shard, executor), plan)


def _resolve_input(request: DownloadRequest) -> tuple[list[InputFile], dict[str, Any]]:
    if request.sample:
        files = sample_input()
        return files, {"kind": "sample", "files": [f.label for f in files], "license": SAMPLE_LICENSE}
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
        "license": hub.license,
    }
    return hub.files, input_json


def probe_columns(files: list[InputFile]) -> list[str]:
    """The columns of the first input file that shows any (an empty or unreadable file tells nothing).

    Refuses an input whose files are all empty ("no rows") or all unreadable (each with its reason).
    """
    unreadable: list[UnreadableInput] = []
    for file in files:
        try:
            if names := column_names(file):
                return names
            if has_rows(file):
                return []  # rows, but none with columns: the mapping says what it misses
        except UnreadableInput as error:
            unreadable.append(error)
    if len(unreadable) == len(files):
        listed = "; ".join(map(str, unreadable[:3])) + ("; ..." if len(unreadable) > 3 else "")
        raise StageError(f"no input file could be read ({listed})")
    names = ", ".join(f.label for f in files[:3]) + (", ..." if len(files) > 3 else "")
    raise StageError(f"the input has no rows: {names} {'is' if len(files) == 1 else 'are'} empty")


def make_plan(files: list[InputFile], mapping: ColumnMapping, request: SelectionRequest) -> SelectionPlan:
    """Two passes over the metadata columns of every file: stratum sizes, then per-stratum hash bounds."""
    counts = StratumCounts()
    unreadable: set[int] = set()  # no row of theirs is selected: the main pass quarantines them by name
    with FileProgress("selection: counting strata", len(files)) as progress:
        for index, file in enumerate(files):
            try:
                strata = file_strata(file, mapping)
            except UnreadableInput:
                strata = []
                unreadable.add(index)
            counts.add_file((group.stratum, group.rows) for group in strata)
            progress.file_done(sum(group.rows for group in strata))
    quotas, summary = allocate(counts, request)
    finder = BoundFinder(request.seed, quotas, counts.sizes)
    if finder.needed:
        with FileProgress(f"selection: drawing (seed {request.seed})", len(files)) as progress:
            for index, file in enumerate(files):
                strata = [] if index in unreadable else file_strata(file, mapping, indices=True)
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
