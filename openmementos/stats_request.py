"""The stats stage's options, and the stage itself (figures of a stage or published folder)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from openmementos.options import Cli, InDir, Request

if TYPE_CHECKING:
    from openmementos.stats import DatasetStats


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


@dataclass(frozen=True)
class StatsResult:
    stats: DatasetStats
    plots: list[Path]


def run_stats(request: StatsRequest) -> StatsResult:
    from openmementos.stats import collect

    if not request.in_dir.is_dir():
        raise ValueError(f"{request.in_dir} is not a folder")
    collector = collect(request.in_dir, request.tokenizer, progress=not request.json_output)
    result = collector.result()
    return StatsResult(result, collector.write_plots(request.plots) if request.plots else [])
