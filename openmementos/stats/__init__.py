"""Dataset statistics: sizes, compression and the simulated peak-KV saving, per domain, next to the paper's.

Works on a stage folder of annotated traces (`annotate` or `validate` output; token counts as recorded
in the rows) or on a published folder (`publish --to DIR`, read from its `full` config and counted
with `--tokenizer`). The parts:

- `figures`: the token counts of each trace and the polars frame of them, one row per trace;
- `distributions`: `dataset_stats(frame)`, every figure a polars aggregation, per domain and overall;
- `plots`: the card's PNG figures; `tables`: the comparison table; `folders`: reading the folders.

The peak-KV ratio is `openmementos.kvsim.simulate_kv`, the same accounting the HF eviction backend
performs: full context (prompt + every token) against the largest cache held with block eviction
(prompt + earlier mementos + the current block and its memento).
"""

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
from openmementos.stats.tables import comparison_rows

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
    "TraceFigures",
    "collect",
    "comparison_rows",
    "dataset_stats",
    "figures_from_texts",
    "figures_from_traces",
    "iter_traces",
    "write_frame",
    "write_plots",
]
