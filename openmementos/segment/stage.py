"""The segment stage: SourceTrace shards in, SegmentedTrace shards (and quarantine) out.

One trace: split the reasoning into sentences (lossless spans), score every boundary, count each
sentence's tokens once, and cut the sentences into the blocks that maximise the SPEC 4.4 objective
(`partition.Objective`: the published one by default).
A block's token count is the sum of its sentences' counts (each sentence encoded on its own; this
differs from encoding the block's text in one piece by at most a token or so per sentence join).

`runtime.stage.Stage` owns the files (one output shard per input shard, resumable, `--shard I/N`, parallel
over shards); a trace that cannot be segmented is quarantined with the reason. `run_segment` is the
stage's entry point: the heuristic scorer runs in worker processes, the LLM scorer on one engine
(`llm_scorer.LLMScorerShards`). `limit` keeps the first N traces in shard order (trial runs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from openmementos.runtime.manifest import Manifest
from openmementos.runtime.shardio import iter_records
from openmementos.runtime.stage import Quarantined, ShardTask, Stage, first_of, shard_limits, tasks_over
from openmementos.schema import SegmentedTrace, SourceTrace, TraceRejected
from openmementos.segment.partition import optimal_partition
from openmementos.segment.request import STAGE, Scorer, SegmentRequest, SegmentSettings
from openmementos.segment.scorers import BoundaryScorer, BoundaryScores, HeuristicScorer
from openmementos.segment.statistics import BlockStatistics
from openmementos.sentences import Span, split_sentences
from openmementos.tokens import count_tokens


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
        for trace in first_of(iter_records(task.source, SourceTrace), self.limits, task.name):
            try:
                yield segment_trace(trace, scorer, self.settings)
            except TraceRejected as rejected:
                yield Quarantined(trace.id, rejected.reason, rejected.detail, trace)


@dataclass(frozen=True)
class SegmentResult:
    manifest: Manifest
    statistics: BlockStatistics | None
    """Blocks per trace and tokens per block over the folder (None when it holds no trace)."""
    scoring: str | None = None
    """What the LLM scorer did (windows, re-asks, fallbacks, tokens, cost), for the LLM scorer."""


def run_segment(request: SegmentRequest) -> SegmentResult:
    """Segment every trace of a finished `download` folder into `request.out_dir` (resumable per shard)."""
    assert request.out_dir is not None  # the request requires it unless explaining
    settings = request.settings()
    tasks = tasks_over(request.in_dir, request.shard, reader=STAGE, expects="download")
    limits = shard_limits([task for task in tasks if request.shard.picks(task.index)], settings.limit)
    if request.scorer is Scorer.heuristic:
        stage = Stage(
            name=STAGE,
            out_dir=request.out_dir,
            model=SegmentedTrace,
            process=HeuristicShards(settings, limits),
            options={**settings.model_dump(), "scorer": "heuristic"},
            description="segment (heuristic)",
        )
        manifest = stage.run(tasks, request.shard, request.make_executor(min(8, os.cpu_count() or 1)))
        return SegmentResult(manifest, BlockStatistics.of_directory(request.out_dir))
    from openmementos.segment.llm_scorer import run_llm_scorer

    manifest, scoring = run_llm_scorer(request, tasks, limits)
    return SegmentResult(manifest, BlockStatistics.of_directory(request.out_dir), scoring)
