"""The comparison table that `stats` prints and the card shows: our figures next to the paper's."""

from __future__ import annotations

from collections.abc import Callable

from openmementos.stats.distributions import ALL, PAPER, DatasetStats, DomainStats


def comparison_rows(stats: DatasetStats) -> list[tuple[str, dict[str, str]]]:
    """(figure, cell per domain column).

    Where the paper published the same figure, the cell ends with it in parentheses: `0.14 (0.16)`.
    """
    rows: list[tuple[str, dict[str, str]]] = []

    def row(
        label: str, value: Callable[[DomainStats], str], paper: dict[str, float] | None = None, unit: str = ""
    ) -> None:
        cells = {}
        for name, domain in stats.domains.items():
            cell = value(domain)
            if paper and name in paper:
                cell += f" ({paper[name]:,g}{unit})"
            cells[name] = cell
        rows.append((label, cells))

    row("traces", lambda d: f"{d.traces:,}")
    row("blocks/trace (median)", lambda d: f"{d.blocks_per_trace.median:g}", PAPER.blocks_per_trace_median)
    row("tokens/block (mean)", lambda d: f"{d.block_tokens.mean:,.0f}", {ALL: PAPER.block_tokens_mean})
    row("tokens/memento (mean)", lambda d: f"{d.memento_tokens.mean:,.0f}", {ALL: PAPER.memento_tokens_mean})
    row("memento/block (median)", lambda d: f"{d.compression_median:.2f}", PAPER.compression_median)
    row("compression (trace)", lambda d: f"{d.trace_compression:.1f}x", {ALL: PAPER.trace_compression}, "x")
    row("peak-KV ratio (mean)", lambda d: f"{d.kv_ratio.mean:.2f}x", {ALL: PAPER.kv_ratio}, "x")
    row("peak-KV ratio (p10-p90)", lambda d: f"{d.kv_ratio.p10:.2f}-{d.kv_ratio.p90:.2f}x")
    return rows
