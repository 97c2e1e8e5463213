"""The files of a stage folder: parquet shards of records and JSONL quarantine files, written and read.

Writers stream (a row group at a time) into a `PendingFile` and publish the file whole on `commit`;
readers go a record batch at a time, so memory stays flat however large a shard is.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from openmementos.runtime.atomic import PendingFile
from openmementos.schema import QuarantineRecord, arrow_schema

QUARANTINE_DIR = "quarantine"
ROW_GROUP_SIZE = 1000

R = TypeVar("R", bound=BaseModel)


class ShardWriter:
    """Streams records of one type into a parquet file, published atomically on `commit`."""

    def __init__(self, path: Path, model: type[BaseModel], row_group_size: int = ROW_GROUP_SIZE) -> None:
        self.schema = arrow_schema(model)
        self.row_group_size = row_group_size
        self.rows = 0
        self._file = PendingFile(path)
        self._buffer: list[dict[str, Any]] = []
        self._writer = pq.ParquetWriter(self._file.tmp, self.schema, compression="zstd")

    @property
    def path(self) -> Path:
        return self._file.path

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
        self._file.commit()

    def abort(self) -> None:
        self._writer.close()
        self._file.abort()


class QuarantineWriter:
    """Collects the rejected rows of one shard into a JSONL file, published atomically on `commit`."""

    def __init__(self, path: Path, stage: str) -> None:
        self.stage = stage
        self.reasons: Counter[str] = Counter()
        self._file = PendingFile(path)
        self._lines = self._file.tmp.open("w")

    def write(self, id: str, reason: str, detail: str, record: BaseModel | dict[str, Any] | None) -> None:
        data = record.model_dump() if isinstance(record, BaseModel) else record
        entry = QuarantineRecord(
            id=id,
            stage=self.stage,
            reason=reason,
            detail=detail,
            record=json.dumps(data, ensure_ascii=False, default=str),
        )
        self._lines.write(entry.model_dump_json() + "\n")
        self.reasons[reason] += 1

    def commit(self) -> None:
        self._lines.close()
        self._file.commit()

    def abort(self) -> None:
        self._lines.close()
        self._file.abort()


def iter_parquet_rows(
    path: Path, columns: Sequence[str] | None = None, batch_size: int = 256
) -> Iterator[dict[str, Any]]:
    """Rows of a parquet file as dicts, a record batch at a time."""
    parquet = pq.ParquetFile(path)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=list(columns) if columns else None):
        yield from batch.to_pylist()


def iter_records(path: Path, model: type[R]) -> Iterator[R]:
    """Rows of a parquet shard validated as `model` (its invariants are re-checked on read)."""
    fields = list(model.model_fields)
    for row in iter_parquet_rows(path, columns=[c for c in pq.read_schema(path).names if c in fields]):
        yield model.model_validate(row)


def parquet_rows(path: Path) -> int:
    """The number of rows of a parquet file, from its footer."""
    return pq.ParquetFile(path).metadata.num_rows


def read_quarantine(out_dir: Path) -> Iterator[QuarantineRecord]:
    """Every quarantine record of a stage folder, shard by shard."""
    for path in sorted((out_dir / QUARANTINE_DIR).glob("part-*.jsonl")):
        with path.open() as lines:
            for line in lines:
                yield QuarantineRecord.model_validate_json(line)
