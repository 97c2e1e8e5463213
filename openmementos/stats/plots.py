"""The card's figures, drawn from the per-trace frame as PNG (byte-stable: no timestamps or versions)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from openmementos.stats.distributions import PAPER, domain_order, median, per_block

PLOTS = ("compression.png", "kv_ratio.png", "blocks.png")


def write_plots(frame: pl.DataFrame, out_dir: Path) -> list[Path]:
    """Draw compression per block, the peak-KV ratio per trace and blocks per trace, per domain."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    by_domain = {domain: frame.filter(pl.col("domain") == domain) for domain in domain_order(frame)}
    paths = []
    for name, draw in zip(PLOTS, (_draw_compression, _draw_kv_ratio, _draw_blocks), strict=True):
        figure, axis = plt.subplots(figsize=(6.4, 3.6))
        draw(axis, by_domain, frame)
        axis.locator_params(axis="y", integer=True)  # counts
        figure.tight_layout()
        figure.savefig(out_dir / name, dpi=110, metadata={"Software": None})
        plt.close(figure)
        paths.append(out_dir / name)
    return paths


def _ratios(frame: pl.DataFrame) -> pl.Series:
    return frame.select(per_block("memento_block_ratios").drop_nulls())["memento_block_ratios"]


def _draw_compression(axis: Any, by_domain: dict[str, pl.DataFrame], everything: pl.DataFrame) -> None:
    ratios = _ratios(everything)
    medians = everything.group_by("domain").agg(median(per_block("memento_block_ratios")).fill_null(0.0))
    medians = dict(medians.iter_rows())
    low, high = (ratios.min(), ratios.max()) if len(ratios) else (0.0, 1.0)
    pad = max((high - low) * 0.05, 0.005)
    bins = [low - pad + (high - low + 2 * pad) * i / 40 for i in range(41)]
    for domain, rows in by_domain.items():
        label = f"{domain} (median {medians[domain]:.2f})"
        axis.hist(_ratios(rows).to_numpy(), bins=bins, histtype="step", linewidth=1.6, label=label)
    axis.set(xlabel="memento tokens / block tokens", ylabel="blocks", title="Compression per block")
    axis.legend()


def _draw_kv_ratio(axis: Any, by_domain: dict[str, pl.DataFrame], everything: pl.DataFrame) -> None:
    ratios = everything["kv_ratio"].cast(pl.Float64)
    mean = ratios.mean()
    axis.hist(ratios.to_numpy(), bins=30, color="#4C72B0", alpha=0.85)
    axis.axvline(mean, color="black", label=f"mean {mean:.2f}x")
    axis.axvline(PAPER.kv_ratio, color="#C44E52", linestyle="--", label=f"paper ~{PAPER.kv_ratio:g}x")
    axis.set(
        xlabel="peak KV tokens without eviction / with eviction",
        ylabel="traces",
        title="Simulated peak-KV saving per trace",
    )
    axis.legend()


def _draw_blocks(axis: Any, by_domain: dict[str, pl.DataFrame], everything: pl.DataFrame) -> None:
    most = everything["blocks"].max()
    bins = [k - 0.5 for k in range(1, most + 2)]  # one bar per block count, centred on it
    for domain, rows in by_domain.items():
        axis.hist(rows["blocks"].to_numpy(), bins=bins, histtype="step", linewidth=1.6, label=domain)
    axis.locator_params(axis="x", integer=True)
    axis.set(xlabel="blocks per trace", ylabel="traces", title="Blocks per trace")
    axis.legend()
