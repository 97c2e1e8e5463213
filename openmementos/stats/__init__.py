"""Dataset statistics: sizes, compression and the simulated peak-KV saving, per domain, next to the paper's.

Works on a stage folder of annotated traces (`annotate` or `validate` output; token counts as recorded
in the rows) or on a published folder (`publish --to DIR`, read from its `full` config and counted
with `--tokenizer`). The parts:

- `figures`: the token counts of each trace and the polars frame of them, one row per trace;
- `distributions`: `dataset_stats(frame)`, every figure a polars aggregation, per domain and overall;
- `plots`: the card's PNG figures; `tables`: the comparison table; `folders`: reading the folders;
- `request` and `stage`: the stage (`run_stats(StatsRequest) -> StatsResult`).

The peak-KV ratio is `openmementos.kvsim.simulate_kv`, the same accounting the HF eviction backend
performs: full context (prompt + every token) against the largest cache held with block eviction
(prompt + earlier mementos + the current block and its memento).
"""

from typing import TYPE_CHECKING

from openmementos.lazy import lazy_exports

_EXPORTS = {
    "ALL": "distributions",
    "PAPER": "distributions",
    "DatasetStats": "distributions",
    "Distribution": "distributions",
    "DomainStats": "distributions",
    "JudgeStats": "distributions",
    "PaperFigures": "distributions",
    "Provenance": "distributions",
    "dataset_stats": "distributions",
    "FRAME_SCHEMA": "figures",
    "FigureFrame": "figures",
    "TraceFigures": "figures",
    "figures_from_texts": "figures",
    "figures_from_traces": "figures",
    "write_frame": "figures",
    "collect": "folders",
    "iter_traces": "folders",
    "write_plots": "plots",
    "comparison_rows": "tables",
    "StatsRequest": "request",
    "StatsResult": "stage",
    "run_stats": "stage",
}
__all__ = [
    "ALL",
    "FRAME_SCHEMA",
    "PAPER",
    "DatasetStats",
    "Distribution",
    "DomainStats",
    "FigureFrame",
    "JudgeStats",
    "PaperFigures",
    "Provenance",
    "StatsRequest",
    "StatsResult",
    "TraceFigures",
    "collect",
    "comparison_rows",
    "dataset_stats",
    "figures_from_texts",
    "figures_from_traces",
    "iter_traces",
    "run_stats",
    "write_frame",
    "write_plots",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from openmementos.stats.distributions import (
        ALL,
        PAPER,
        DatasetStats,
        Distribution,
        DomainStats,
        JudgeStats,
        PaperFigures,
        Provenance,
        dataset_stats,
    )
    from openmementos.stats.figures import (
        FRAME_SCHEMA,
        FigureFrame,
        TraceFigures,
        figures_from_texts,
        figures_from_traces,
        write_frame,
    )
    from openmementos.stats.folders import collect, iter_traces
    from openmementos.stats.plots import write_plots
    from openmementos.stats.request import StatsRequest
    from openmementos.stats.stage import StatsResult, run_stats
    from openmementos.stats.tables import comparison_rows
