"""Generated OpenThoughts3-shaped rows, with every kind of bad row, for tests and benchmarks.

Row `i` is a pure function of `i`: its domain, source and difficulty cycle, its reasoning has a
varying number of sentences, and one row in ten is broken in one of the ways of `BAD_KINDS`, each
of which `openmementos download` must quarantine with the reason given there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from openmementos.format import BLOCK_START

BAD_KINDS = {
    "unclosed": "unclosed_think",
    "no_think": "no_think",
    "cjk": "cjk",
    "empty_answer": "empty_answer",
    "one_sentence": "too_few_sentences",
    "null_domain": "not_a_string",
    "two_answers": "bad_conversations",
    "delimiter": "contains_delimiter",
}
DOMAINS = ("math",) * 12 + ("code",) * 5 + ("science",) * 3  # 60 / 25 / 15 %
SOURCES = {d: [f"synthetic/{d}-{k}" for k in range(3)] for d in ("math", "code", "science")}

SCHEMA = pa.schema(
    [
        ("difficulty", pa.int64()),
        ("source", pa.string()),
        ("domain", pa.string()),
        (
            "conversations",
            pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())])),
        ),
    ]
)


def row_kind(i: int) -> str:
    """'good', or the `BAD_KINDS` key of row i (one row in ten is bad, cycling through the kinds)."""
    if i % 10 != 3:
        return "good"
    kinds = list(BAD_KINDS)
    return kinds[(i // 10) % len(kinds)]


def expected_reason(i: int) -> str | None:
    kind = row_kind(i)
    return None if kind == "good" else BAD_KINDS[kind]


def ot3_row(i: int, sentences: int | None = None) -> dict[str, Any]:
    """Row i of the synthetic corpus; `sentences` sets the reasoning's length (default: 4 to 15)."""
    count = sentences if sentences is not None else 4 + i % 12
    problem = f"Problem {i}: find the value of x_{i} given that 3x_{i} + {i % 7} = {3 * i + i % 7}."
    steps = [
        f"Step {k} of the work on problem {i}: we get x_{k} = {i * k + 0.5} and check it against the "
        f"constraint, which holds."
        for k in range(count)
    ]
    reasoning = "\n\n".join(steps)
    answer = f"The answer is x_{i} = {i}."
    kind = row_kind(i)
    if kind == "cjk":
        reasoning += "\n\n所以答案是正确的。"
    elif kind == "one_sentence":
        reasoning = f"Clearly x_{i} = {i}."
    elif kind == "empty_answer":
        answer = ""
    elif kind == "delimiter":
        reasoning += f"\n\nA stray {BLOCK_START} token."
    assistant = f"<think>\n{reasoning}\n</think>\n\n{answer}"
    if kind == "unclosed":
        assistant = f"<think>\n{reasoning}"
    elif kind == "no_think":
        assistant = f"{reasoning}\n\n{answer}"
    turns = [{"from": "human", "value": problem}, {"from": "gpt", "value": assistant}]
    if kind == "two_answers":
        turns.append({"from": "gpt", "value": assistant})
    return {**ot3_metadata(i), "conversations": turns}


def ot3_metadata(i: int) -> dict[str, Any]:
    """The metadata columns of row i (what a stratified selection reads)."""
    domain = DOMAINS[i % len(DOMAINS)]
    return {
        "difficulty": None if i % 11 == 0 else 1 + i % 9,
        "source": SOURCES[domain][i % 3],
        "domain": None if row_kind(i) == "null_domain" else domain,
    }


def write_ot3_parquet(
    folder: Path, rows: int, shards: int, sentences: int | None = None, row_group_size: int = 1000
) -> list[Path]:
    """Rows 0..rows-1 as `data/train-0000k-of-0000n.parquet` shards of (almost) equal size."""
    return _write_shards(folder, rows, shards, SCHEMA, lambda i: ot3_row(i, sentences), row_group_size)


def write_metadata_parquet(folder: Path, rows: int, shards: int, row_group_size: int = 10_000) -> list[Path]:
    """The metadata columns alone of rows 0..rows-1 (no trace text), laid out like `write_ot3_parquet`."""
    schema = pa.schema([field for field in SCHEMA if field.name != "conversations"])
    return _write_shards(folder, rows, shards, schema, ot3_metadata, row_group_size)


def _write_shards(
    folder: Path, rows: int, shards: int, schema: pa.Schema, make_row: Callable[[int], dict[str, Any]], group: int
) -> list[Path]:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(shards):
        path = folder / "data" / f"train-{shard:05d}-of-{shards:05d}.parquet"
        indices = range(shard * rows // shards, (shard + 1) * rows // shards)
        with pq.ParquetWriter(path, schema) as writer:
            for batch in _chunks(indices, group):
                writer.write_table(pa.Table.from_pylist([make_row(i) for i in batch], schema=schema))
        paths.append(path)
    return paths


def _chunks(indices: range, size: int) -> Iterator[range]:
    for start in range(0, len(indices), size):
        yield indices[start : start + size]
