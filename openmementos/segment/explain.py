"""`openmementos segment --explain`: one trace's blocks, their cut scores and sizes, and why."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from openmementos.runtime.manifest import data_files
from openmementos.schema import SegmentedTrace
from openmementos.segment.partition import evaluate
from openmementos.segment.scorers import HeuristicScorer

PREVIEW_CHARS = 70


def find_trace(directory: Path, trace_id: str) -> dict[str, object] | None:
    """The row with this id in a stage's output shards (reads only the id column until it is found)."""
    for path in data_files(directory):
        ids = pq.read_table(path, columns=["id"]).column("id").to_pylist()
        if trace_id in ids:
            table = pq.read_table(path).slice(ids.index(trace_id), 1)
            return table.to_pylist()[0]
    return None


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def explain(trace: SegmentedTrace, lam: float, console: Console) -> None:
    """Print the blocks of a segmented trace: where each cut is, its score and rule, the best boundary left uncut."""
    sentences = trace.sentences()
    scores = trace.boundary_scores
    reasons = HeuristicScorer().score(sentences).reasons if trace.scorer == "heuristic" else None
    blocks = [(first, last) for first, last in trace.blocks]
    parts = evaluate(scores, trace.sentence_tokens, blocks, lam)
    console.print(
        f"[bold]{trace.id}[/]  {trace.domain} · {len(sentences)} sentences · {sum(trace.sentence_tokens):,} "
        f"{trace.tokenizer} tokens · scorer {trace.scorer}"
    )
    console.print(
        f"{len(blocks)} blocks · mean cut score {parts.mean_cut:.2f} · CV of block sizes "
        f"{parts.cv:.3f} · objective {parts.objective:.4f} (λ = {lam:g})"
    )
    table = Table(show_lines=False)
    for column, justify in (("block", "right"), ("sentences", "right"), ("tokens", "right"), ("cut", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    if reasons:
        table.add_column("rule")
    table.add_column("best uncut inside", justify="right")
    table.add_column("starts with")
    for number, (first, last) in enumerate(blocks):
        cut = "—" if number == 0 else f"{scores[first - 1]:g}"
        inside = [(scores[i], i) for i in range(first, last)]
        best_inside = max(inside, key=lambda pair: (pair[0], -pair[1]), default=None)
        uncut = "—" if best_inside is None else f"{best_inside[0]:g} after s{best_inside[1]}"
        row = [str(number), f"{first}–{last}", f"{trace.block_tokens[number]:,}", cut]
        if reasons:
            row.append("" if number == 0 else reasons[first - 1])
        row += [uncut, _preview(sentences[first])]
        table.add_row(*row)
    console.print(table)
    console.print(
        "cut: the score of the boundary before the block (0 mid-derivation … 3 new approach); "
        "best uncut inside: the strongest boundary the optimum left inside the block."
    )


@dataclass(frozen=True)
class BlockStatistics:
    """Blocks per trace and tokens per block over a segment output, next to the published figures."""

    traces: int
    blocks_per_trace_median: float
    blocks_per_trace_mean: float
    tokens_per_block_mean: float
    tokens_per_block_median: float

    @classmethod
    def of(cls, block_tokens: Iterable[Sequence[int]]) -> BlockStatistics | None:
        counts: list[int] = []
        sizes: list[int] = []
        for row in block_tokens:
            counts.append(len(row))
            sizes.extend(row)
        if not counts:
            return None
        return cls(
            len(counts),
            statistics.median(counts),
            statistics.fmean(counts),
            statistics.fmean(sizes),
            statistics.median(sizes),
        )

    @classmethod
    def of_directory(cls, directory: Path) -> BlockStatistics | None:
        return cls.of(
            row
            for path in data_files(directory)
            for row in pq.read_table(path, columns=["block_tokens"]).column("block_tokens").to_pylist()
        )

    def render(self) -> str:
        return (
            f"blocks per trace: median {self.blocks_per_trace_median:g}, mean {self.blocks_per_trace_mean:.1f} "
            f"(published: median ~9 math/code, ~7 science) · tokens per block: mean {self.tokens_per_block_mean:,.0f}, "
            f"median {self.tokens_per_block_median:,.0f} (published: mean ~1,150)"
        )
