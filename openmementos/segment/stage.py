"""The segment stage: SourceTrace shards in, SegmentedTrace shards (and quarantine) out.

One trace: split the reasoning into sentences (lossless spans), score every boundary, count each
sentence's tokens once, and cut the sentences into the blocks that maximise the SPEC 4.4 objective
(`partition.Objective`: the published one by default).
A block's token count is the sum of its sentences' counts (each sentence encoded on its own; this
differs from encoding the block's text in one piece by at most a token or so per sentence join).

`shards.Stage` owns the files (one output shard per input shard, resumable, `--shard I/N`, parallel
over shards); a trace that cannot be segmented is quarantined with the reason. `limit` keeps the first
N traces in shard order (trial runs).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openmementos.annotate.stage import shard_limits
from openmementos.schema import SegmentedTrace, SourceTrace, TraceRejected
from openmementos.segment.partition import Objective, optimal_partition
from openmementos.segment.scorers import BoundaryScorer, BoundaryScores, HeuristicScorer
from openmementos.segment.sentences import Span, split_sentences
from openmementos.shards import Quarantined, ShardTask, iter_records
from openmementos.tokens import DEFAULT_ENCODING, count_tokens

STAGE = "segment"


@dataclass(frozen=True)
class SegmentSettings:
    """What the output depends on besides the boundary scores: the objective, its limits, and `limit`
    (segment only the first N traces, in shard order; None: all)."""

    lam: float = 0.5
    min_block_tokens: int = 200
    max_block_tokens: int | None = None
    tokenizer: str = DEFAULT_ENCODING
    objective: Objective = Objective.published
    limit: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "objective", Objective(self.objective))
        if self.limit is not None and self.limit < 0:
            raise ValueError(f"--limit must be >= 0, got {self.limit}")
        if self.lam < 0:
            raise ValueError(f"--lambda must be >= 0, got {self.lam}")
        if self.min_block_tokens < 0:
            raise ValueError(f"--min-block-tokens must be >= 0, got {self.min_block_tokens}")
        if self.max_block_tokens is not None and self.max_block_tokens < max(self.min_block_tokens, 1):
            raise ValueError(
                f"--max-block-tokens {self.max_block_tokens} is below --min-block-tokens {self.min_block_tokens}"
            )

    def options(self) -> dict[str, Any]:
        """Recorded in the manifest: a run resumes only with the same options."""
        return {**asdict(self), "objective": str(self.objective)}

    def shard_limits(self, tasks: Sequence[ShardTask[Path]]) -> dict[str, int] | None:
        """How many traces each of the shards this run picks contributes under `limit` (None: all)."""
        return shard_limits([task.source for task in tasks], [task.name for task in tasks], self.limit)


def read_sources(task: ShardTask[Path], limits: dict[str, int] | None) -> Iterator[SourceTrace]:
    """The shard's traces, the first `limits[name]` of them under --limit."""
    traces = iter_records(task.source, SourceTrace)
    return traces if limits is None else itertools.islice(traces, limits.get(task.name, 0))


def sentences_of(trace: SourceTrace) -> tuple[list[Span], list[str]]:
    """The sentence spans of a trace's reasoning and their texts; rejects a trace with no reasoning."""
    if not trace.reasoning.strip():
        raise TraceRejected("empty_reasoning", "the reasoning between <think> and </think> is empty")
    spans = split_sentences(trace.reasoning)
    return spans, [trace.reasoning[start:end] for start, end in spans]


def assemble(
    trace: SourceTrace,
    spans: Sequence[Span],
    sentences: Sequence[str],
    scores: BoundaryScores,
    scorer: str,
    settings: SegmentSettings,
) -> SegmentedTrace:
    """Count tokens, find the optimal blocks and build the output row (pure: no I/O)."""
    sizes = count_tokens(sentences, settings.tokenizer)
    partition = optimal_partition(
        sizes, scores.scores, settings.lam, settings.min_block_tokens, settings.max_block_tokens, settings.objective
    )
    if not partition.feasible:
        largest = max(sizes)
        raise TraceRejected(
            "no_feasible_partition",
            f"no blocks of {settings.min_block_tokens}-{settings.max_block_tokens} tokens fit "
            f"{sum(sizes)} tokens in {len(sizes)} sentences (the largest sentence has {largest})",
        )
    return SegmentedTrace(
        **trace.model_dump(),
        sentence_spans=[list(span) for span in spans],
        sentence_tokens=sizes,
        boundary_scores=scores.scores,
        blocks=[list(block) for block in partition.blocks],
        block_tokens=partition.block_tokens,
        scorer=scorer,
        tokenizer=settings.tokenizer,
    )


def segment_trace(trace: SourceTrace, scorer: BoundaryScorer, settings: SegmentSettings) -> SegmentedTrace:
    """One trace, start to end, with a synchronous scorer. Raises TraceRejected when it cannot be cut."""
    spans, sentences = sentences_of(trace)
    return assemble(trace, spans, sentences, scorer.score(sentences, trace.problem), scorer.name, settings)


@dataclass(frozen=True)
class HeuristicShards:
    """The shard processor of the heuristic scorer (picklable: it runs in worker processes)."""

    settings: SegmentSettings
    limits: dict[str, int] | None = None

    def __call__(self, task: ShardTask[Path]) -> Iterator[SegmentedTrace | Quarantined]:
        scorer = HeuristicScorer()
        for trace in read_sources(task, self.limits):
            try:
                yield segment_trace(trace, scorer, self.settings)
            except TraceRejected as rejected:
                yield Quarantined(trace.id, rejected.reason, rejected.detail, trace)
