"""The dataset's statistics from the per-trace frame: each figure a polars expression, per domain and overall.

`dataset_stats(frame)` aggregates the frame of `FigureFrame` (one row per trace) into `DatasetStats`:
per domain and for "all", the distribution of blocks per trace, tokens per block and per memento and the
peak-KV ratio, the median memento/block ratio and the trace compression; traces per source; the judge's
scores; and, for annotated traces, who made them. Figures are rounded once, when the models are built.
"""

from __future__ import annotations

from typing import Any

import polars as pl
from pydantic import BaseModel

from openmementos.schema import Usage
from openmementos.stats.figures import PROVENANCE, USAGE

ALL = "all"


class PaperFigures(BaseModel):
    """Published OpenMementos / MEMENTO figures (SPEC 1 and 4.4) that our statistics are shown next to."""

    blocks_per_trace_median: dict[str, float] = {"math": 9, "code": 9, "science": 7}
    block_tokens_mean: float = 1150
    memento_tokens_mean: float = 194
    compression_median: dict[str, float] = {"math": 0.16, "code": 0.18, "science": 0.23}
    trace_compression: float = 6.0
    kv_ratio: float = 2.5


PAPER = PaperFigures()


class Distribution(BaseModel):
    """A distribution in a few numbers (quantiles interpolate linearly between closest ranks, as numpy)."""

    count: int
    mean: float
    median: float
    p10: float
    p90: float
    min: float
    max: float

    @classmethod
    def from_aggregate(cls, figures: dict[str, Any]) -> Distribution | None:
        """The model of one `distribution(...)` result, rounded to 4 decimals; None for no values."""
        if not figures["count"]:
            return None
        return cls(count=figures["count"], **{name: round(figures[name], 4) for name in _QUANTITIES})


_QUANTITIES = ("mean", "median", "p10", "p90", "min", "max")


def distribution(values: pl.Expr) -> pl.Expr:
    """The aggregation behind `Distribution`: count, mean, median, p10, p90, min, max (nulls left out)."""
    values = values.cast(pl.Float64)
    return pl.struct(
        count=values.count(),
        mean=values.mean(),
        median=median(values),
        p10=values.quantile(0.1, "linear"),
        p90=values.quantile(0.9, "linear"),
        min=values.min(),
        max=values.max(),
    )


def median(values: pl.Expr) -> pl.Expr:
    """The 0.5 quantile, interpolated like the other quantiles (nulls left out)."""
    return values.cast(pl.Float64).quantile(0.5, "linear")


class DomainStats(BaseModel):
    traces: int
    blocks: int
    blocks_per_trace: Distribution
    block_tokens: Distribution
    memento_tokens: Distribution
    compression_median: float
    """Median memento/block token ratio over blocks (the paper's per-domain compression figure)."""
    trace_compression: float
    """Block tokens / memento tokens, summed over the traces (the paper's ~6x)."""
    kv_ratio: Distribution
    """Per trace: peak KV tokens without eviction / with eviction."""
    peak_kv_tokens_mean: float
    peak_kv_tokens_without_eviction_mean: float


class JudgeStats(BaseModel):
    judged_mementos: int
    final_score: Distribution


class Provenance(BaseModel):
    """Who made the rows: counts per annotator model, prompt version, boundary scorer and tokenizer."""

    annotator_models: dict[str, int] = {}
    prompt_versions: dict[str, int] = {}
    scorers: dict[str, int] = {}
    tokenizers: dict[str, int] = {}
    usage: Usage = Usage()
    """Summed over the traces: what annotating them cost."""
    judge_rounds: dict[int, int] = {}
    """Judge rounds per judged memento -> mementos (1 = passed at once)."""


class DatasetStats(BaseModel):
    traces: int
    domains: dict[str, DomainStats]
    """Per domain (most traces first), plus "all"."""
    sources: dict[str, dict[str, int]]
    """Domain -> source -> traces."""
    judge: JudgeStats | None
    provenance: Provenance | None
    """Only for annotated traces: published rows carry no provenance."""
    paper: PaperFigures


def per_block(column: str) -> pl.Expr:
    """The values of a per-block list column, one per block (empty lists leave a null out)."""
    return pl.col(column).explode()


def domain_figures() -> list[pl.Expr]:
    """The aggregations behind `DomainStats`, for a group of traces (a domain) or the whole frame."""
    block_tokens, memento_tokens = (per_block(name).cast(pl.Int64).sum() for name in ("block_tokens", "memento_tokens"))
    return [
        pl.len().alias("traces"),
        pl.col("blocks").cast(pl.Int64).sum().alias("blocks"),
        distribution(pl.col("blocks")).alias("blocks_per_trace"),
        distribution(per_block("block_tokens")).alias("block_tokens"),
        distribution(per_block("memento_tokens")).alias("memento_tokens"),
        median(per_block("memento_block_ratios")).fill_null(0.0).alias("compression_median"),
        pl.when(memento_tokens > 0).then(block_tokens / memento_tokens).otherwise(0.0).alias("trace_compression"),
        distribution(pl.col("kv_ratio")).alias("kv_ratio"),
        pl.col("peak_kv_tokens").mean().alias("peak_kv_tokens_mean"),
        pl.col("peak_kv_tokens_without_eviction").mean().alias("peak_kv_tokens_without_eviction_mean"),
    ]


def domain_order(frame: pl.DataFrame) -> list[str]:
    """Domains by decreasing trace count, then name ("all" not included)."""
    counts = frame.group_by("domain").len().sort(["len", pl.col("domain").cast(pl.String)], descending=[True, False])
    return counts["domain"].to_list()


def dataset_stats(frame: pl.DataFrame) -> DatasetStats:
    """Aggregate the per-trace frame (`FRAME_SCHEMA`); ValueError when it holds no trace."""
    if frame.is_empty():
        raise ValueError("no traces to summarise")
    order = domain_order(frame)
    by_domain = frame.group_by("domain").agg(domain_figures()).with_columns(pl.col("domain").cast(pl.String))
    overall = frame.select(domain_figures()).with_columns(domain=pl.lit(ALL))
    rows = {row["domain"]: row for row in pl.concat([by_domain, overall], how="diagonal").iter_rows(named=True)}
    return DatasetStats(
        traces=frame.height,
        domains={name: _domain_stats(rows[name]) for name in [*order, ALL]},
        sources=_sources(frame, order),
        judge=_judge(frame),
        provenance=_provenance(frame),
        paper=PAPER,
    )


def _domain_stats(row: dict[str, Any]) -> DomainStats:
    distributions = ("blocks_per_trace", "block_tokens", "memento_tokens", "kv_ratio")
    return DomainStats(
        traces=row["traces"],
        blocks=row["blocks"],
        **{name: Distribution.from_aggregate(row[name]) for name in distributions},
        compression_median=round(row["compression_median"], 4),
        trace_compression=round(row["trace_compression"], 3),
        peak_kv_tokens_mean=round(row["peak_kv_tokens_mean"], 1),
        peak_kv_tokens_without_eviction_mean=round(row["peak_kv_tokens_without_eviction_mean"], 1),
    )


def _sources(frame: pl.DataFrame, order: list[str]) -> dict[str, dict[str, int]]:
    """Domain (in `order`) -> source -> traces, most traces first, then by name."""
    counts = frame.group_by("domain", "source").len()
    counts = counts.sort(["len", pl.col("source").cast(pl.String)], descending=[True, False])
    sources: dict[str, dict[str, int]] = {domain: {} for domain in order}
    for domain, source, traces in counts.iter_rows():
        sources[domain][source] = traces
    return sources


def _judge(frame: pl.DataFrame) -> JudgeStats | None:
    scores = Distribution.from_aggregate(frame.select(distribution(per_block("judge_scores"))).item())
    return JudgeStats(judged_mementos=scores.count, final_score=scores) if scores else None


def _provenance(frame: pl.DataFrame) -> Provenance | None:
    annotated = frame.filter(pl.col("annotator_model").is_not_null())
    if annotated.is_empty():
        return None
    usage = annotated.select(pl.col(f"usage_{name}").sum().alias(name) for name in USAGE).row(0, named=True)
    rounds = annotated.select(per_block("judge_rounds").drop_nulls()).group_by("judge_rounds").len()
    return Provenance(
        **{f"{name}s": _counts(annotated, name) for name in PROVENANCE},
        usage=Usage(**{**usage, "cost_usd": round(usage["cost_usd"], 6)}),
        judge_rounds=dict(rounds.sort("judge_rounds").iter_rows()),
    )


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    """Traces per value of `column`, most first; ties in order of first appearance."""
    counts = frame.group_by(column, maintain_order=True).len().sort("len", descending=True, maintain_order=True)
    return dict(counts.iter_rows())
