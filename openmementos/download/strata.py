"""The metadata pre-pass of a stratified selection: the rows of an input file, grouped by stratum.

Only the metadata columns (`ColumnMapping.metadata_columns`) are read, and polars groups them:

- a local parquet file, or a Hub file already fetched into the local cache, is scanned lazily with the
  streaming engine (memory holds a few record batches, however large the file);
- a Hub parquet file not fetched yet has those columns read by range requests (pyarrow over
  `HfFileSystem`: the small column chunks, never the whole shard);
- an `.arrow` file (`save_to_disk`) is memory-mapped.

Rows are grouped on the raw column values, and each group's values become a stratum through
`ColumnMapping.stratum`, the function the main pass applies to each row, so both passes put every row
in the same stratum. JSON lines, where a line may not even parse, are classified row by row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from openmementos.download.mapping import ColumnMapping
from openmementos.download.readers import InputFile, Unreadable, iter_rows, open_on_hub, present_columns, reading
from openmementos.download.sampling import Stratum

_ROW = "__row_index"
_ROWS = "__rows"
_KEY = "__key_"


@dataclass
class StratumRows:
    """The rows of one file in one stratum (None: no usable domain); `indices` only when asked for."""

    stratum: Stratum | None
    rows: int
    indices: list[int] | None = None


def file_strata(file: InputFile, mapping: ColumnMapping, indices: bool = False) -> list[StratumRows]:
    """The rows of `file` per stratum, with their row indices (as `iter_rows` numbers them) if `indices`.

    Raises `UnreadableInput` when the file cannot be decoded.
    """
    columns = mapping.metadata_columns()
    if file.format == "jsonl":
        return _classified_row_by_row(file, mapping, columns, indices)
    local = file.format == "arrow" or file.cached_path() is not None
    with reading(file, local=local, also=(pl.exceptions.PolarsError,)):
        return _grouped(file, mapping, columns, indices)


def _grouped(file: InputFile, mapping: ColumnMapping, columns: Sequence[str], indices: bool) -> list[StratumRows]:
    frame, rows = _metadata_frame(file, columns)
    present = frame.collect_schema().names()
    if not present:  # every stratum value is fixed (`--set`) or absent: one stratum for the whole file
        return [StratumRows(mapping.stratum({}), rows, list(range(rows)) if indices else None)]
    if indices:
        frame = frame.with_row_index(_ROW)
    # Floats are grouped by their text, which keeps 0.0 and -0.0 apart as `stratum_value` does.
    floats = [name for name, dtype in frame.collect_schema().items() if dtype.is_float()]
    keys = [pl.col(name).cast(pl.String).alias(_KEY + name) if name in floats else pl.col(name) for name in present]
    aggregations = [pl.len().alias(_ROWS), *(pl.col(name).first() for name in floats)]
    groups = frame.group_by(keys).agg(*aggregations, *([pl.col(_ROW)] if indices else [])).collect(engine="streaming")
    merged: dict[Stratum | None, StratumRows] = {}
    for group in groups.iter_rows(named=True):
        stratum = mapping.stratum(group)
        found = merged.setdefault(stratum, StratumRows(stratum, 0, [] if indices else None))
        found.rows += group[_ROWS]
        if indices:
            found.indices.extend(group[_ROW])
    return list(merged.values())


def _metadata_frame(file: InputFile, columns: Sequence[str]) -> tuple[pl.LazyFrame, int]:
    """The `columns` that `file` has, as a lazy frame, and the file's row count."""
    if file.format == "parquet":
        path = file.cached_path()
        if path is None:
            with open_on_hub(file) as handle:
                # pre_buffer: one request per row group for the wanted column chunks, not one per chunk
                parquet = pq.ParquetFile(handle, pre_buffer=True)
                table = parquet.read(columns=present_columns(parquet.schema_arrow.names, columns))
            return pl.from_arrow(table).lazy(), table.num_rows
        schema = pq.read_schema(path)
        rows = pq.ParquetFile(path).metadata.num_rows
        return pl.scan_parquet(path).select(present_columns(schema.names, columns)), rows
    if file.format == "arrow":
        with pa.memory_map(file.local_path()) as source:
            table = pa.ipc.open_stream(source).read_all()
            table = table.select(present_columns(table.schema.names, columns))
        return pl.from_arrow(table).lazy(), table.num_rows
    raise ValueError(f"{file.label}: unsupported format {file.format!r}")


def _classified_row_by_row(
    file: InputFile, mapping: ColumnMapping, columns: Sequence[str], indices: bool
) -> list[StratumRows]:
    merged: dict[Stratum | None, StratumRows] = {}
    for index, row in iter_rows(file, columns):
        stratum = None if isinstance(row, Unreadable) else mapping.stratum(row)
        found = merged.setdefault(stratum, StratumRows(stratum, 0, [] if indices else None))
        found.rows += 1
        if indices:
            found.indices.append(index)
    return list(merged.values())
