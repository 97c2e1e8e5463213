"""Dataset statistics: sizes, compression and the simulated peak-KV saving, per domain, next to the paper's.

Works on a stage folder of annotated traces (`annotate` or `validate` output; token counts as recorded
in the rows) or on a published folder (`publish --to DIR`, read from its `full` config and counted
with `--tokenizer`). The core is a streaming accumulator (`StatsCollector`) fed one `TraceFigures` per
trace, so memory holds a few numbers per block, never the texts.

The peak-KV ratio is `openmementos.kvsim.simulate_kv`, the same accounting the HF eviction backend
performs: full context (prompt + every token) against the largest cache held with block eviction
(prompt + earlier mementos + the current block and its memento).
"""

from __future__ import annotations

import math
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from statistics import fmean

from pydantic import BaseModel

from openmementos.format import THINK_CLOSE, THINK_OPEN
from openmementos.kvsim import KVFootprint, simulate_kv
from openmementos.runtime.manifest import MANIFEST, data_files, iter_stage
from openmementos.runtime.shardio import iter_records
from openmementos.schema import AnnotatedTrace, FullRow, Usage
from openmementos.tokens import DEFAULT_ENCODING, count_tokens

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

BATCH = 256
"""Traces whose texts are counted in one tokenizer call."""


# --------------------------------------------------------------------------- one trace


@dataclass(frozen=True)
class TraceFigures:
    """The token counts of one trace that every statistic is computed from.

    `prompt_tokens` counts the problem and `<think>`, `answer_tokens` everything after the last
    `<|summary_end|>` (newline, `</think>`, the answer), as `simulate_kv` expects;
    `judge_scores` holds the score of each judged memento as kept (`MementoReview.final_score`).
    """

    domain: str
    source: str
    prompt_tokens: int
    block_tokens: tuple[int, ...]
    memento_tokens: tuple[int, ...]
    answer_tokens: int
    judge_scores: tuple[float, ...] = ()

    def kv(self) -> KVFootprint:
        return simulate_kv(self.prompt_tokens, self.block_tokens, self.memento_tokens, self.answer_tokens)

    def ratios(self) -> list[float]:
        """Memento/block token ratio of every block with content."""
        return [m / b for b, m in zip(self.block_tokens, self.memento_tokens, strict=True) if b]


def _framing_texts(problem: str, answer: str) -> list[str]:
    """The texts of kvsim's `prompt_tokens` and `answer_tokens`, laid out as `render_response` does.

    Before the first `<|block_start|>`: the problem and `<think>`. After the last `<|summary_end|>`:
    the newline that closes the memento, `</think>` and the answer.
    """
    return [f"{problem}\n{THINK_OPEN}\n", f"\n{THINK_CLOSE}\n{answer}"]


def figures_from_texts(
    *,
    domain: str,
    source: str,
    problem: str,
    blocks: Sequence[str],
    mementos: Sequence[str],
    answer: str,
    tokenizer: str = DEFAULT_ENCODING,
) -> TraceFigures:
    """Count a trace's pieces with `tokenizer` (tiktoken name or tokenizer.json path)."""
    counts = count_tokens([*_framing_texts(problem, answer), *blocks, *mementos], tokenizer)
    return TraceFigures(
        domain=domain,
        source=source,
        prompt_tokens=counts[0],
        block_tokens=tuple(counts[2 : 2 + len(blocks)]),
        memento_tokens=tuple(counts[2 + len(blocks) :]),
        answer_tokens=counts[1],
    )


def _answer(trace: AnnotatedTrace | FullRow) -> str:
    if isinstance(trace, AnnotatedTrace):
        return trace.answer
    return trace.response.split(THINK_CLOSE, 1)[1].removeprefix("\n")


def _block_and_memento_texts(trace: AnnotatedTrace | FullRow) -> list[str]:
    """The texts that `block_tokens` and `memento_tokens` count, blocks first."""
    if isinstance(trace, AnnotatedTrace):
        return [*trace.block_texts(), *trace.mementos]
    blocks = ["".join(trace.sentences[first : last + 1]) for first, last in trace.blocks]
    return [*blocks, *trace.block_summaries]


def figures_from_traces(traces: Sequence[AnnotatedTrace | FullRow], tokenizer: str | None = None) -> list[TraceFigures]:
    """Figures of a batch of traces, with one tokenizer call per tokenizer for the whole batch.

    Annotated traces keep their recorded block and memento counts unless `tokenizer` differs from
    theirs; published rows are counted with `tokenizer` (default cl100k_base).
    """
    groups: dict[str, list[str]] = defaultdict(list)
    plans = []
    for trace in traces:
        recorded = isinstance(trace, AnnotatedTrace) and tokenizer in (None, trace.tokenizer)
        name = trace.tokenizer if recorded else tokenizer or DEFAULT_ENCODING
        texts = _framing_texts(trace.problem, _answer(trace)) + ([] if recorded else _block_and_memento_texts(trace))
        plans.append((name, len(groups[name]), len(texts), len(trace.blocks), recorded))
        groups[name].extend(texts)
    counts = {name: count_tokens(texts, name) for name, texts in groups.items()}
    figures = []
    for trace, (name, offset, size, n_blocks, recorded) in zip(traces, plans, strict=True):
        mine = counts[name][offset : offset + size]
        reviews = trace.reviews if isinstance(trace, AnnotatedTrace) else []
        figures.append(
            TraceFigures(
                domain=trace.domain,
                source=trace.source,
                prompt_tokens=mine[0],
                block_tokens=tuple(trace.block_tokens if recorded else mine[2 : 2 + n_blocks]),
                memento_tokens=tuple(trace.memento_tokens if recorded else mine[2 + n_blocks :]),
                answer_tokens=mine[1],
                judge_scores=tuple(r.final_score for r in reviews if r.final_score is not None),
            )
        )
    return figures


# --------------------------------------------------------------------------- summaries


class Summary(BaseModel):
    """A distribution in a few numbers."""

    count: int
    mean: float
    median: float
    p10: float
    p90: float
    min: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary | None:
        if not values:
            return None
        ordered = sorted(values)
        return cls(
            count=len(ordered),
            mean=round(fmean(ordered), 4),
            median=round(_quantile(ordered, 0.5), 4),
            p10=round(_quantile(ordered, 0.1), 4),
            p90=round(_quantile(ordered, 0.9), 4),
            min=round(ordered[0], 4),
            max=round(ordered[-1], 4),
        )


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default method)."""
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


class DomainStats(BaseModel):
    traces: int
    blocks: int
    blocks_per_trace: Summary
    block_tokens: Summary
    memento_tokens: Summary
    compression_median: float
    """Median memento/block token ratio over blocks (the paper's per-domain compression figure)."""
    trace_compression: float
    """Block tokens / memento tokens, summed over the traces (the paper's ~6x)."""
    kv_ratio: Summary
    """Per trace: peak KV tokens without eviction / with eviction."""
    peak_kv_tokens_mean: float
    peak_kv_tokens_without_eviction_mean: float


class JudgeStats(BaseModel):
    judged_mementos: int
    final_score: Summary


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
    """Per domain, plus "all"."""
    sources: dict[str, dict[str, int]]
    """Domain -> source -> traces."""
    judge: JudgeStats | None
    provenance: Provenance | None
    """Only for annotated traces: published rows carry no provenance."""
    paper: PaperFigures


@dataclass
class _Samples:
    """The numbers kept per domain: a few per block (compact arrays, not Python lists of floats)."""

    blocks_per_trace: array = field(default_factory=lambda: array("i"))
    block_tokens: array = field(default_factory=lambda: array("i"))
    memento_tokens: array = field(default_factory=lambda: array("i"))
    ratios: array = field(default_factory=lambda: array("f"))
    kv_ratios: array = field(default_factory=lambda: array("f"))
    peaks: array = field(default_factory=lambda: array("q"))
    peaks_without: array = field(default_factory=lambda: array("q"))

    def add(self, figures: TraceFigures, kv: KVFootprint) -> None:
        self.blocks_per_trace.append(len(figures.block_tokens))
        self.block_tokens.extend(figures.block_tokens)
        self.memento_tokens.extend(figures.memento_tokens)
        self.ratios.extend(figures.ratios())
        self.kv_ratios.append(kv.ratio)
        self.peaks.append(kv.peak_with_eviction)
        self.peaks_without.append(kv.peak_without_eviction)

    def summarize(self) -> DomainStats:
        blocks, mementos = sum(self.block_tokens), sum(self.memento_tokens)
        return DomainStats(
            traces=len(self.blocks_per_trace),
            blocks=len(self.block_tokens),
            blocks_per_trace=Summary.of(self.blocks_per_trace),
            block_tokens=Summary.of(self.block_tokens),
            memento_tokens=Summary.of(self.memento_tokens),
            compression_median=round(_quantile(sorted(self.ratios), 0.5), 4) if self.ratios else 0.0,
            trace_compression=round(blocks / mementos, 3) if mementos else 0.0,
            kv_ratio=Summary.of(self.kv_ratios),
            peak_kv_tokens_mean=round(fmean(self.peaks), 1),
            peak_kv_tokens_without_eviction_mean=round(fmean(self.peaks_without), 1),
        )


class StatsCollector:
    """Accumulates `TraceFigures` one trace at a time; `result()` summarises, `write_plots()` draws."""

    def __init__(self) -> None:
        self._samples: dict[str, _Samples] = defaultdict(_Samples)
        self._sources: dict[str, Counter[str]] = defaultdict(Counter)
        self._scores = array("f")
        self._provenance: dict[str, Counter[str]] = defaultdict(Counter)
        self._rounds: Counter[int] = Counter()
        self._usage = Usage()

    def add_traces(self, traces: Sequence[AnnotatedTrace | FullRow], tokenizer: str | None = None) -> None:
        """Add a batch of traces (see `figures_from_traces`) and, for annotated ones, their provenance."""
        for figures in figures_from_traces(traces, tokenizer):
            self.add(figures)
        for trace in traces:
            if isinstance(trace, AnnotatedTrace):
                self._add_provenance(trace)

    def _add_provenance(self, trace: AnnotatedTrace) -> None:
        for name, value in (
            ("annotator_models", trace.annotator_model),
            ("prompt_versions", trace.prompt_version),
            ("scorers", trace.scorer),
            ("tokenizers", trace.tokenizer),
        ):
            self._provenance[name][value] += 1
        self._usage += trace.usage
        self._rounds.update(len(review.rounds) for review in trace.reviews if review.rounds)

    def add(self, figures: TraceFigures) -> None:
        kv = figures.kv()
        self._samples[ALL].add(figures, kv)
        self._samples[figures.domain].add(figures, kv)
        self._sources[figures.domain][figures.source] += 1
        self._scores.extend(figures.judge_scores)

    def extend(self, figures: Iterable[TraceFigures]) -> StatsCollector:
        for item in figures:
            self.add(item)
        return self

    @property
    def traces(self) -> int:
        return len(self._samples[ALL].blocks_per_trace) if ALL in self._samples else 0

    def domains(self) -> list[str]:
        """Domains by decreasing trace count (then name), "all" last."""
        counts = {d: len(s.blocks_per_trace) for d, s in self._samples.items() if d != ALL}
        return sorted(counts, key=lambda d: (-counts[d], d))

    def result(self) -> DatasetStats:
        if not self.traces:
            raise ValueError("no traces to summarise")
        scores = Summary.of(self._scores)
        return DatasetStats(
            traces=self.traces,
            domains={name: self._samples[name].summarize() for name in [*self.domains(), ALL]},
            sources={d: dict(sorted(self._sources[d].items(), key=lambda kv: (-kv[1], kv[0]))) for d in self.domains()},
            judge=JudgeStats(judged_mementos=scores.count, final_score=scores) if scores else None,
            provenance=self._provenance_result(),
            paper=PAPER,
        )

    def _provenance_result(self) -> Provenance | None:
        if not self._provenance:
            return None
        return Provenance(
            **{name: dict(counts.most_common()) for name, counts in self._provenance.items()},
            usage=self._usage.model_copy(update={"cost_usd": round(self._usage.cost_usd, 6)}),
            judge_rounds=dict(sorted(self._rounds.items())),
        )

    def write_plots(self, out_dir: Path) -> list[Path]:
        """Draw the card's figures as PNG (byte-stable for the same data: no timestamps or versions)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        out_dir.mkdir(parents=True, exist_ok=True)
        by_domain = {domain: self._samples[domain] for domain in self.domains()}
        paths = []
        for name, draw in (
            ("compression.png", _draw_compression),
            ("kv_ratio.png", _draw_kv_ratio),
            ("blocks.png", _draw_blocks),
        ):
            figure, axis = plt.subplots(figsize=(6.4, 3.6))
            draw(axis, by_domain, self._samples[ALL])
            axis.locator_params(axis="y", integer=True)  # counts
            figure.tight_layout()
            figure.savefig(out_dir / name, dpi=110, metadata={"Software": None})
            plt.close(figure)
            paths.append(out_dir / name)
        return paths


def _draw_compression(axis, by_domain: dict[str, _Samples], everything: _Samples) -> None:
    low, high = min(everything.ratios, default=0.0), max(everything.ratios, default=1.0)
    pad = max((high - low) * 0.05, 0.005)
    bins = [low - pad + (high - low + 2 * pad) * i / 40 for i in range(41)]
    for domain, samples in by_domain.items():
        median = _quantile(sorted(samples.ratios), 0.5) if samples.ratios else 0.0
        axis.hist(samples.ratios, bins=bins, histtype="step", linewidth=1.6, label=f"{domain} (median {median:.2f})")
    axis.set(xlabel="memento tokens / block tokens", ylabel="blocks", title="Compression per block")
    axis.legend()


def _draw_kv_ratio(axis, by_domain: dict[str, _Samples], everything: _Samples) -> None:
    ratios = list(everything.kv_ratios)
    axis.hist(ratios, bins=30, color="#4C72B0", alpha=0.85)
    axis.axvline(fmean(ratios), color="black", label=f"mean {fmean(ratios):.2f}x")
    axis.axvline(PAPER.kv_ratio, color="#C44E52", linestyle="--", label=f"paper ~{PAPER.kv_ratio:g}x")
    axis.set(
        xlabel="peak KV tokens without eviction / with eviction",
        ylabel="traces",
        title="Simulated peak-KV saving per trace",
    )
    axis.legend()


def _draw_blocks(axis, by_domain: dict[str, _Samples], everything: _Samples) -> None:
    most = max(everything.blocks_per_trace)
    bins = [k - 0.5 for k in range(1, most + 2)]  # one bar per block count, centred on it
    for domain, samples in by_domain.items():
        axis.hist(list(samples.blocks_per_trace), bins=bins, histtype="step", linewidth=1.6, label=domain)
    axis.locator_params(axis="x", integer=True)
    axis.set(xlabel="blocks per trace", ylabel="traces", title="Blocks per trace")
    axis.legend()


# --------------------------------------------------------------------------- reading folders


def iter_traces(directory: Path) -> Iterator[AnnotatedTrace | FullRow]:
    """Every trace of a stage folder of annotated traces, or every `full` row of a published folder."""
    if (directory / MANIFEST).exists():
        yield from iter_stage(directory, AnnotatedTrace)
    elif (directory / "full").is_dir():
        for path in published_full_files(directory):
            yield from iter_records(path, FullRow)
    else:
        raise FileNotFoundError(
            f"{directory} is neither a stage folder (no {MANIFEST}) nor a published dataset folder (no full/)"
        )


def published_full_files(directory: Path) -> list[Path]:
    """The parquet shards of the `full` config of a published folder."""
    return sorted((directory / "full").glob("train-*.parquet"))


def count_traces(directory: Path) -> int:
    """How many traces `iter_traces(directory)` will yield (for progress bars)."""
    import pyarrow.parquet as pq

    paths = data_files(directory) if (directory / MANIFEST).exists() else published_full_files(directory)
    return sum(pq.ParquetFile(path).metadata.num_rows for path in paths)


def collect(directory: Path, tokenizer: str | None = None, progress: bool = True) -> StatsCollector:
    """Statistics of every trace in `directory`, with a progress bar on the console.

    Annotated traces are counted as recorded unless `tokenizer` differs from theirs; published rows are
    counted with `tokenizer` (default cl100k_base).
    """
    from rich.progress import track

    traces = iter_traces(directory)
    if progress:
        traces = track(traces, total=count_traces(directory), description="stats", transient=True)
    collector = StatsCollector()
    while batch := list(islice(traces, BATCH)):
        collector.add_traces(batch, tokenizer)
    return collector


# --------------------------------------------------------------------------- the comparison table


def comparison_rows(stats: DatasetStats) -> list[tuple[str, dict[str, str]]]:
    """(figure, cell per domain column): the table that `stats` and the card show.

    Where the paper published the same figure, the cell ends with it in parentheses: `0.14 (0.16)`.
    """
    rows: list[tuple[str, dict[str, str]]] = []

    def row(label: str, value, paper: dict[str, float] | None = None, unit: str = "") -> None:
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
