"""The stats stage: a folder's per-trace frame, its figures, and the plots and exports asked for."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from openmementos.runtime.manifest import MANIFEST, StageError, read_input, require_finished
from openmementos.stats.distributions import DatasetStats, dataset_stats
from openmementos.stats.figures import write_frame
from openmementos.stats.folders import collect
from openmementos.stats.plots import write_plots
from openmementos.stats.request import StatsRequest


@dataclass(frozen=True)
class StatsResult:
    stats: DatasetStats
    plots: list[Path]
    exports: list[Path]
    """The per-trace frame as written with --csv / --parquet."""


def run_stats(request: StatsRequest) -> StatsResult:
    """The figures of a finished `annotate` or `validate` folder, or of a published folder."""
    in_dir = request.in_dir
    if in_dir.is_dir() and not (in_dir / MANIFEST).exists() and not (in_dir / "full").is_dir():
        raise StageError(
            f"{in_dir} is neither a stage folder (no {MANIFEST}) nor a published folder (no full/); "
            "stats reads the output of `annotate` or `validate`, or of `publish --to`"
        )
    if not (in_dir / "full").is_dir():
        manifest = read_input(in_dir, reader="stats", expects=("annotate", "validate"))
        require_finished(in_dir, manifest, manifest.shards)
    frame = collect(request.in_dir, request.tokenizer, progress=not request.json_output)
    exports = [(path, format) for path, format in ((request.csv, "csv"), (request.parquet, "parquet")) if path]
    for path, format in exports:
        try:
            write_frame(frame, path, format)
        except OSError as error:
            raise ValueError(f"cannot write {path}: {error.strerror or error}") from None
    plots = write_plots(frame, request.plots) if request.plots else []
    return StatsResult(dataset_stats(frame), plots, [path for path, _ in exports])
