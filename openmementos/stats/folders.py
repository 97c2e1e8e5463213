"""Reading the traces that `stats` describes: a stage folder of annotated traces, or a published folder."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import polars as pl

from openmementos.runtime.manifest import MANIFEST, data_files, iter_stage
from openmementos.runtime.progress import row_progress
from openmementos.runtime.shardio import iter_parquet_rows, iter_records
from openmementos.schema import AnnotatedTrace, FullRow
from openmementos.stats.figures import BATCH, RECORDED_COLUMNS, FigureFrame, RecordedTrace, Trace


def iter_traces(directory: Path) -> Iterator[AnnotatedTrace | FullRow]:
    """Every trace of a stage folder of annotated traces, or every `full` row of a published folder."""
    if (directory / MANIFEST).exists():
        yield from iter_stage(directory, AnnotatedTrace)
    elif (directory / "full").is_dir():
        for path in published_full_files(directory):
            yield from iter_records(path, FullRow)
    else:
        raise FileNotFoundError(
            f"{directory} is neither a stage folder (no {MANIFEST}) nor a published dataset folder (no full/)"
        )


def iter_recorded(directory: Path) -> Iterator[RecordedTrace]:
    """The recorded counts and provenance of every trace of a stage folder, without the texts of blocks."""
    for path in data_files(directory):
        for row in iter_parquet_rows(path, RECORDED_COLUMNS):
            yield RecordedTrace.from_row(row)


def published_full_files(directory: Path) -> list[Path]:
    """The parquet shards of the `full` config of a published folder."""
    return sorted((directory / "full").glob("train-*.parquet"))


def folder_trace_count(directory: Path) -> int:
    """How many traces `iter_traces(directory)` will yield (for progress bars), from the parquet footers."""
    import pyarrow.parquet as pq

    paths = data_files(directory) if (directory / MANIFEST).exists() else published_full_files(directory)
    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def collect(directory: Path, tokenizer: str | None = None, progress: bool = True) -> pl.DataFrame:
    """The per-trace frame of every trace in `directory`, with a progress bar on the console.

    Annotated traces are counted as recorded unless `tokenizer` differs from theirs; published rows are
    counted with `tokenizer` (default cl100k_base).
    """
    stage_folder = (directory / MANIFEST).exists()
    traces: Iterator[Trace] = iter_recorded(directory) if stage_folder and tokenizer is None else iter_traces(directory)
    figures = FigureFrame()
    total = folder_trace_count(directory) if progress else 0
    with row_progress("stats", total, enabled=progress, transient=True) as advance:
        while batch := list(islice(traces, BATCH)):
            figures.add_traces(batch, tokenizer)
            advance(len(batch))
    return figures.frame()
