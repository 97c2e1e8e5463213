"""The stats stage's options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from openmementos.options import Cli, InDir, Request


class StatsRequest(Request):
    """The figures of an `annotate`/`validate` folder or a published folder."""

    in_dir: InDir = Field(
        description="An `annotate` or `validate` output folder, or a published folder (`publish --to DIR`)."
    )
    json_output: Annotated[bool, Cli(flag="--json")] = Field(
        False, description="Print the statistics as JSON (and nothing else) on stdout."
    )
    plots: Path | None = Field(None, description="Write PNG plots (compression, peak-KV ratio, blocks per trace) here.")
    tokenizer: str | None = Field(
        None,
        description="Count tokens with this tiktoken encoding or tokenizer.json path instead of the rows' own "
        "(published folders: default cl100k_base).",
    )
    csv: Path | None = Field(
        None, description="Write the per-trace figures (one row per trace) as CSV here; list columns as JSON."
    )
    parquet: Path | None = Field(None, description="Write the per-trace figures (one row per trace) as parquet here.")
