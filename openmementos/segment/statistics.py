"""Blocks per trace and tokens per block over a segment folder, next to the published figures."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from openmementos.runtime.manifest import data_files


@dataclass(frozen=True)
class BlockStatistics:
    """Blocks per trace and tokens per block over a segment output, next to the published figures."""

    traces: int
    blocks_per_trace_median: float
    blocks_per_trace_mean: float
    tokens_per_block_mean: float
    tokens_per_block_median: float
    blocks_median_by_domain: dict[str, float]

    @classmethod
    def of(cls, rows: Iterable[tuple[str, Sequence[int]]]) -> BlockStatistics | None:
        """From (domain, block token counts) per trace."""
        counts: dict[str, list[int]] = {}
        sizes: list[int] = []
        for domain, block_tokens in rows:
            counts.setdefault(domain, []).append(len(block_tokens))
            sizes.extend(block_tokens)
        every = [count for domain_counts in counts.values() for count in domain_counts]
        if not every:
            return None
        return cls(
            len(every),
            statistics.median(every),
            statistics.fmean(every),
            statistics.fmean(sizes),
            statistics.median(sizes),
            {domain: statistics.median(values) for domain, values in sorted(counts.items())},
        )

    @classmethod
    def of_directory(cls, directory: Path) -> BlockStatistics | None:
        def rows() -> Iterable[tuple[str, Sequence[int]]]:
            for path in data_files(directory):
                table = pq.read_table(path, columns=["domain", "block_tokens"])
                yield from zip(
                    table.column("domain").to_pylist(), table.column("block_tokens").to_pylist(), strict=True
                )

        return cls.of(rows())

    def render(self) -> str:
        domains = ", ".join(f"{domain} {median:g}" for domain, median in self.blocks_median_by_domain.items())
        return (
            f"blocks per trace: median {self.blocks_per_trace_median:g} ({domains}), mean "
            f"{self.blocks_per_trace_mean:.1f} (published: median ~9 math, ~9 code, ~7 science) · tokens per "
            f"block: mean {self.tokens_per_block_mean:,.0f}, median {self.tokens_per_block_median:,.0f} "
            "(published: mean ~1,150)"
        )
