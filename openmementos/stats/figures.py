"""Per-trace figures: the token counts of one trace, and the polars frame holding one row per trace.

`figures_from_traces` turns a batch of traces into `TraceFigures` (block and memento token counts as
recorded, or recounted with another tokenizer); `FigureFrame` gathers them, with the simulated peak KV
of each trace (`openmementos.kvsim`) and the provenance of annotated traces, into the frame every
statistic, plot and export is computed from. The frame keeps a few numbers per block, never the texts.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import polars as pl

from openmementos.format import THINK_CLOSE, THINK_OPEN
from openmementos.kvsim import KVFootprint, simulate_kv
from openmementos.runtime.atomic import PendingFile
from openmementos.schema import AnnotatedTrace, FullRow, MementoReview, Usage
from openmementos.tokens import DEFAULT_ENCODING, count_tokens

BATCH = 256
"""Traces whose texts are counted in one tokenizer call."""

FRAME_SCHEMA = pl.Schema(
    {
        "id": pl.String,
        "domain": pl.Categorical(),
        "source": pl.Categorical(),
        "blocks": pl.Int32,
        "prompt_tokens": pl.Int64,
        "answer_tokens": pl.Int64,
        "block_tokens": pl.List(pl.Int32),
        "memento_tokens": pl.List(pl.Int32),
        "memento_block_ratios": pl.List(pl.Float32),
        "peak_kv_tokens": pl.Int64,
        "peak_kv_tokens_without_eviction": pl.Int64,
        "kv_ratio": pl.Float32,
        "judge_scores": pl.List(pl.Float32),
        "judge_rounds": pl.List(pl.Int32),
        "annotator_model": pl.Categorical(),
        "prompt_version": pl.Categorical(),
        "scorer": pl.Categorical(),
        "tokenizer": pl.Categorical(),
        "usage_requests": pl.Int64,
        "usage_prompt_tokens": pl.Int64,
        "usage_cached_prompt_tokens": pl.Int64,
        "usage_completion_tokens": pl.Int64,
        "usage_cost_usd": pl.Float64,
    }
)
"""One row per trace. Per block: `block_tokens`, `memento_tokens`, `memento_block_ratios` (blocks with
content only); `peak_kv_*` and `kv_ratio` are `simulate_kv` of the trace; `judge_scores` is the score of
each judged memento as kept, `judge_rounds` the rounds it took. Provenance columns (`annotator_model` to
`usage_cost_usd`) are null for published rows, which carry none. Ratios are float32, enough for figures
shown to 4 decimals; the few-valued text columns are categorical (a number per row, not a copy of the text)."""

PROVENANCE = ("annotator_model", "prompt_version", "scorer", "tokenizer")
USAGE = ("requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "cost_usd")


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
    id: str | None = None
    """Published rows carry no id."""

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


@dataclass(frozen=True)
class RecordedTrace:
    """The fields of an annotated trace that its figures need when its recorded token counts are used.

    No block or memento text: `stats` reads these columns alone from a stage folder (`RECORDED_COLUMNS`),
    which is much lighter than reading and validating whole traces.
    """

    id: str
    domain: str
    source: str
    problem: str
    answer: str
    tokenizer: str
    block_tokens: Sequence[int]
    memento_tokens: Sequence[int]
    reviews: Sequence[MementoReview]
    annotator_model: str
    prompt_version: str
    scorer: str
    usage: Usage

    @classmethod
    def of(cls, trace: AnnotatedTrace) -> RecordedTrace:
        return cls(**{name: getattr(trace, name) for name in RECORDED_COLUMNS})

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> RecordedTrace:
        """From a stage folder's row (`RECORDED_COLUMNS` of an `AnnotatedTrace`)."""
        reviews = [MementoReview.model_validate(review) for review in row["reviews"]]
        return cls(**{**row, "reviews": reviews, "usage": Usage.model_validate(row["usage"])})


RECORDED_COLUMNS = tuple(field.name for field in fields(RecordedTrace))

Trace = AnnotatedTrace | FullRow | RecordedTrace


def _answer(trace: Trace) -> str:
    if isinstance(trace, FullRow):
        return trace.response.split(THINK_CLOSE, 1)[1].removeprefix("\n")
    return trace.answer


def _block_and_memento_texts(trace: AnnotatedTrace | FullRow) -> list[str]:
    """The texts that `block_tokens` and `memento_tokens` count, blocks first."""
    if isinstance(trace, AnnotatedTrace):
        return [*trace.block_texts(), *trace.mementos]
    blocks = ["".join(trace.sentences[first : last + 1]) for first, last in trace.blocks]
    return [*blocks, *trace.block_summaries]


def figures_from_traces(traces: Sequence[Trace], tokenizer: str | None = None) -> list[TraceFigures]:
    """Figures of a batch of traces, with one tokenizer call per tokenizer for the whole batch.

    Annotated traces keep their recorded block and memento counts unless `tokenizer` differs from
    theirs; published rows are counted with `tokenizer` (default cl100k_base). A `RecordedTrace` has no
    texts to count again: ValueError if `tokenizer` differs from its own.
    """
    groups: dict[str, list[str]] = defaultdict(list)
    plans = []
    for trace in traces:
        recorded = not isinstance(trace, FullRow) and tokenizer in (None, trace.tokenizer)
        if isinstance(trace, RecordedTrace) and not recorded:
            raise ValueError(f"trace {trace.id}: counted with {trace.tokenizer}, its texts are needed for {tokenizer}")
        name = trace.tokenizer if recorded else tokenizer or DEFAULT_ENCODING
        texts = _framing_texts(trace.problem, _answer(trace)) + ([] if recorded else _block_and_memento_texts(trace))
        n_blocks = len(trace.blocks) if isinstance(trace, FullRow) else len(trace.block_tokens)
        plans.append((name, len(groups[name]), len(texts), n_blocks, recorded))
        groups[name].extend(texts)
    counts = {name: count_tokens(texts, name) for name, texts in groups.items()}
    figures = []
    for trace, (name, offset, size, n_blocks, recorded) in zip(traces, plans, strict=True):
        mine = counts[name][offset : offset + size]
        reviews = [] if isinstance(trace, FullRow) else trace.reviews
        figures.append(
            TraceFigures(
                domain=trace.domain,
                source=trace.source,
                prompt_tokens=mine[0],
                block_tokens=tuple(trace.block_tokens if recorded else mine[2 : 2 + n_blocks]),
                memento_tokens=tuple(trace.memento_tokens if recorded else mine[2 + n_blocks :]),
                answer_tokens=mine[1],
                judge_scores=tuple(r.final_score for r in reviews if r.final_score is not None),
                id=None if isinstance(trace, FullRow) else trace.id,
            )
        )
    return figures


# --------------------------------------------------------------------------- the frame


class FigureFrame:
    """Builds the per-trace frame (`FRAME_SCHEMA`) a batch of traces at a time; `frame()` returns it.

    Batches are merged `MERGE` at a time, so the frame is held in a few large chunks (quick to
    aggregate) without ever copying it whole.
    """

    MERGE = 64

    def __init__(self) -> None:
        self._merged: list[pl.DataFrame] = []
        self._batches: list[pl.DataFrame] = []

    def add_traces(self, traces: Sequence[Trace], tokenizer: str | None = None) -> None:
        """Add a batch of traces (see `figures_from_traces`) and, for annotated ones, their provenance."""
        made_by = [None if isinstance(trace, FullRow) else trace for trace in traces]
        self._add(_chunk(figures_from_traces(traces, tokenizer), made_by))

    def extend(self, figures: Iterable[TraceFigures]) -> FigureFrame:
        """Add figures made elsewhere (no provenance)."""
        figures = list(figures)
        self._add(_chunk(figures, [None] * len(figures)))
        return self

    def _add(self, batch: pl.DataFrame) -> None:
        self._batches.append(batch)
        if len(self._batches) == self.MERGE:
            self._merged.append(pl.concat(self._batches, rechunk=True))
            self._batches = []

    def frame(self) -> pl.DataFrame:
        return pl.concat([pl.DataFrame(schema=FRAME_SCHEMA), *self._merged, *self._batches], rechunk=False)


def _chunk(figures: Sequence[TraceFigures], made_by: Sequence[AnnotatedTrace | RecordedTrace | None]) -> pl.DataFrame:
    """The frame rows of a batch: figures, their simulated KV and (where known) who made the trace."""
    columns: dict[str, list[Any]] = {name: [] for name in FRAME_SCHEMA}
    for item, trace in zip(figures, made_by, strict=True):
        kv = item.kv()
        values: dict[str, Any] = {
            "id": item.id,
            "domain": item.domain,
            "source": item.source,
            "blocks": len(item.block_tokens),
            "prompt_tokens": item.prompt_tokens,
            "answer_tokens": item.answer_tokens,
            "block_tokens": item.block_tokens,
            "memento_tokens": item.memento_tokens,
            "memento_block_ratios": item.ratios(),
            "peak_kv_tokens": kv.peak_with_eviction,
            "peak_kv_tokens_without_eviction": kv.peak_without_eviction,
            "kv_ratio": kv.ratio,
            "judge_scores": item.judge_scores,
            "judge_rounds": [len(r.rounds) for r in trace.reviews if r.rounds] if trace else [],
        }
        for name in PROVENANCE:
            values[name] = getattr(trace, name) if trace else None
        for name in USAGE:
            values[f"usage_{name}"] = getattr(trace.usage, name) if trace else None
        for name, value in values.items():
            columns[name].append(value)
    return pl.DataFrame(columns, schema=FRAME_SCHEMA)


# --------------------------------------------------------------------------- export

EXPORT_FORMATS = ("csv", "parquet")


def write_frame(frame: pl.DataFrame, path: Path, format: str) -> None:
    """Write the per-trace frame as parquet (list columns kept) or CSV (list columns as JSON arrays).

    Written to a temporary file and renamed into place, so an interrupted export leaves no half file.
    """
    if format not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format {format!r}; use one of {', '.join(EXPORT_FORMATS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    pending = PendingFile(path)
    try:
        if format == "parquet":
            frame.write_parquet(pending.tmp)
        else:
            lists = [name for name, dtype in frame.schema.items() if dtype == pl.List]
            frame.with_columns(_as_json_text(name) for name in lists).write_csv(pending.tmp)
    except BaseException:
        pending.abort()
        raise
    pending.commit()


def _as_json_text(column: str) -> pl.Expr:
    """A list column as the text of a JSON array (`[217,217,30]`), which CSV can hold."""
    return pl.format("[{}]", pl.col(column).list.eval(pl.element().cast(pl.String)).list.join(",")).alias(column)
