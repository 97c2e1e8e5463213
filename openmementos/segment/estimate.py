"""What `segment` will send and cost before it runs (`segment --estimate`, `run --check`), and the blocks a
sample of its input gets, cut here (for annotate's estimate before segment has run).

For a sample of the download traces, the LLM scorer's own message builder (`llm_scorer.window_messages`)
makes every window request of both passes; prompt tokens are counted with `--tokenizer` (plus
`MESSAGE_OVERHEAD_TOKENS` per message) and the answer is the scores list the schema allows. Re-asks are
not counted: a window is re-asked only when its answer is unusable (none were on vLLM's and llama.cpp's
servers, see the README), and then once. Pure: reads the input folder, sends nothing, writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

from openmementos.llm.cost import ESTIMATE_SAMPLE, MESSAGE_OVERHEAD_TOKENS, CostEstimate, StepEstimate, cacheable
from openmementos.runtime.stage import sample_records
from openmementos.schema import SegmentedTrace, SourceTrace, TraceRejected
from openmementos.segment.request import STAGE, Scorer, SegmentRequest
from openmementos.segment.scorers import HeuristicScorer
from openmementos.segment.stage import segment_trace, sentences_of
from openmementos.tokens import count_tokens


def _sources(request: SegmentRequest, limit: int | None, size: int) -> tuple[Iterator[SourceTrace], int]:
    limits = [value for value in (request.limit, limit) if value is not None]
    return sample_records(
        request.in_dir, request.shard, min(limits, default=None), STAGE, "download", SourceTrace, size
    )


def blocks_in_memory(request: SegmentRequest, limit: int | None, size: int) -> tuple[Iterator[SegmentedTrace], int]:
    """Up to `size` of the request's input traces cut into blocks here with the heuristic scorer (traces
    segment would quarantine left out), and how many traces the run reads (capped by `limit` too).

    For a plan whose segment stage has not run: download costs nothing, segment with an LLM scorer does,
    so annotate's price can be known before either is paid. An LLM scorer's blocks differ a little.
    """
    sources, traces = _sources(request, limit, size)
    scorer, settings = HeuristicScorer(), request.settings()

    def cut() -> Iterator[SegmentedTrace]:
        for trace in sources:
            try:
                yield segment_trace(trace, scorer, settings)
            except TraceRejected:
                continue  # quarantined by segment: annotate never sees it

    return cut(), traces


def window_requests(sentences: list[str], request: SegmentRequest) -> StepEstimate:
    """The scoring requests of one trace: every window of both passes, with the answer each would get."""
    from openmementos.segment.llm_scorer import window_messages, windows

    usage = StepEstimate()
    boundaries = len(sentences) - 1
    for size in (request.window, request.second_window):
        if size is None or boundaries < 1:
            continue
        for window in windows(boundaries, size):
            messages = window_messages(sentences, window)
            texts = [message["content"] for message in messages]
            answer = json.dumps({"scores": [1] * len(window)})
            system, *rest, reply = count_tokens([*texts, answer], request.tokenizer)
            prompt = system + sum(rest) + MESSAGE_OVERHEAD_TOKENS * len(messages)
            usage.add(1.0, prompt, cacheable(system + MESSAGE_OVERHEAD_TOKENS), reply)
    return usage


def estimate_segment(request: SegmentRequest) -> CostEstimate:
    """The expected requests, tokens and cost of `run_segment(request)`; sends nothing, writes nothing."""
    sources, traces = _sources(request, None, ESTIMATE_SAMPLE)
    if request.scorer is Scorer.heuristic or request.model is None:
        return CostEstimate("heuristic", "the heuristic scorer", traces, 0, {"score": StepEstimate()}, None)
    total, counted = StepEstimate(), 0
    for trace in sources:
        _spans, sentences = sentences_of(trace)
        total = total + window_requests(sentences, request)
        counted += 1
    passes = f"windows of {request.window}" + (f" and {request.second_window}" if request.second_window else "")
    price = request.prices(request.model).price(request.model)
    per_trace = {"score": total.scaled(1 / counted) if counted else total}
    assumed = "no re-asks (an unusable window answer is re-asked once)"
    what = f"LLM boundary scores, {passes}"
    return CostEstimate(request.model, what, traces, counted, per_trace, price, assumed, batch_api=False)
