"""What an annotate run will send and cost, before it sends anything (`annotate --estimate`, `run --check`).

For a sample of the input traces (`ESTIMATE_SAMPLE`, spread over the shards), the recipe's own message
builders (`annotate.prompting`) make the requests it would send: compress, the expected re-asks, then
the judge and refinement rounds of the chosen `--judge` mode at the expected pass rates. Mementos are
not known before the run, so each stands in as the opening `EXPECTED_MEMENTO_RATIO` of its block, and
fixes as `EXPECTED_FIX`. Prompt tokens are counted with the trace's tokenizer, plus
`MESSAGE_OVERHEAD_TOKENS` per message; the per-trace averages are scaled to the whole input.

Cached prompt tokens follow OpenAI's published rule for automatic prefix caching: the prefix a request
shares with an earlier request (of the same trace, or the system prompt all traces share) counts once
it reaches 1,024 tokens, in 128-token steps. vLLM and SGLang cache any shared prefix, so there the
cached share is a little larger. The Batch API figure is half the standard price, without a prefix
cache discount.

Pure: reads the input folder, sends nothing, writes nothing.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from pydantic import BaseModel

from openmementos.annotate.parsing import RUBRIC
from openmementos.annotate.prompting import (
    Message,
    PromptSet,
    compress_messages,
    default_prompts,
    judge_messages,
    judge_trace_messages,
    reask_messages,
    refine_messages,
    refine_trace_messages,
    trace_text,
)
from openmementos.annotate.request import EXTRACTIVE, JUDGE_OFF, PER_MEMENTO, STAGE, AnnotateRequest, RecipeSettings
from openmementos.llm.pricing import BATCH_DISCOUNT, ModelPrice
from openmementos.runtime.selection import ShardSelection
from openmementos.runtime.shardio import iter_records, parquet_rows
from openmementos.runtime.stage import shard_limits, tasks_over
from openmementos.schema import SegmentedTrace, SourceTrace, TraceRejected
from openmementos.tokens import count_tokens

if TYPE_CHECKING:
    from openmementos.segment.request import SegmentRequest

R = TypeVar("R", bound=BaseModel)

EXPECTED_FIRST_PASS_RATE = 0.28
"""Share of first-draft mementos that reach the threshold: the published single-pass pass rate, which
benchmarks/bench_annotate_tokens.py's scripted judge reproduces (and measures back)."""
EXPECTED_REFINED_PASS_RATE = 0.90
"""Share of refined mementos that reach it: the published pass rate after refinement (same benchmark)."""
EXPECTED_REASKS_PER_TRACE = 0.05
"""Re-asks per trace for missing or rule-breaking mementos. The benchmark's scripted model needs none;
this allows for one in twenty traces (a trial run's annotate_report.json gives the real figure)."""
EXPECTED_MEMENTO_RATIO = 0.15
"""Memento tokens per block token: the middle of the 10-20 % the prompt asks for; the benchmark's
scripted compressor (the extractive memento) measures 0.15 on the embedded sample."""
EXPECTED_FIX = "Quote the derived equation verbatim in ASCII math, e.g. x_1 + x_2 = 7, and drop the narration."
"""A typical fix of a verdict (about 25 tokens); a verdict has `EXPECTED_FIXES` of them."""
EXPECTED_FIXES = 3
MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat template adds per message (role markers), as OpenAI counts them."""
ESTIMATE_SAMPLE = 200
"""Traces whose requests are built and counted; the averages are scaled to the whole input."""
CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
"""OpenAI's automatic prefix caching: prefixes of at least 1,024 tokens, cached in 128-token steps."""

STEPS = ("compress", "reask", "judge", "refine")


@dataclass
class StepEstimate:
    """Expected requests and tokens of one recipe step (per trace, or in all)."""

    requests: float = 0.0
    prompt_tokens: float = 0.0
    cached_prompt_tokens: float = 0.0
    completion_tokens: float = 0.0

    def add(self, weight: float, prompt: int, cached: int, completion: int) -> None:
        self.requests += weight
        self.prompt_tokens += weight * prompt
        self.cached_prompt_tokens += weight * cached
        self.completion_tokens += weight * completion

    def __add__(self, other: StepEstimate) -> StepEstimate:
        return StepEstimate(
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def scaled(self, factor: float) -> StepEstimate:
        return StepEstimate(
            self.requests * factor,
            self.prompt_tokens * factor,
            self.cached_prompt_tokens * factor,
            self.completion_tokens * factor,
        )


@dataclass(frozen=True)
class Costs:
    """US dollars, three ways: list price, with cached prefixes at the cached rate, Batch API."""

    standard: float
    cached: float
    batch: float


@dataclass(frozen=True)
class CostEstimate:
    """What annotating an input will send and cost (`estimate_annotate`)."""

    model: str
    judge: str
    traces: int
    """Traces the run would annotate (the selected input, under `--limit`)."""
    counted: int
    """Traces whose requests were built and counted (the averages come from these)."""
    per_trace: dict[str, StepEstimate]
    """Expected requests and tokens per trace, by recipe step."""
    price: ModelPrice | None
    """The model's price (None: unknown, e.g. a self-hosted model: cost 0)."""
    assumptions: dict[str, float] = field(default_factory=dict)
    basis: str = ""
    """Where the blocks counted came from, when not from the annotate input itself."""

    def trace_total(self) -> StepEstimate:
        return sum(self.per_trace.values(), StepEstimate())

    def total(self) -> StepEstimate:
        return self.trace_total().scaled(self.traces)

    def costs(self, usage: StepEstimate) -> Costs:
        if self.price is None:
            return Costs(0.0, 0.0, 0.0)
        prompt, completion = round(usage.prompt_tokens), round(usage.completion_tokens)
        standard = self.price.cost(prompt, completion)
        cached = self.price.cost(prompt, completion, round(usage.cached_prompt_tokens))
        return Costs(standard, cached, standard * BATCH_DISCOUNT)


def cacheable(prefix_tokens: int) -> int:
    """Prompt tokens a provider caches of a shared prefix this long (OpenAI's rule, see the module doc)."""
    return prefix_tokens // CACHE_STEP_TOKENS * CACHE_STEP_TOKENS if prefix_tokens >= CACHE_MIN_TOKENS else 0


class _Counter:
    """Prompt tokens of message lists, counting a trace's shared text once."""

    def __init__(self, tokenizer: str, shared: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self._known = {text: count_tokens([text], tokenizer)[0] for text in shared}

    def text(self, text: str) -> int:
        for known, tokens in self._known.items():
            if text.startswith(known):
                rest = text[len(known) :]
                return tokens + (count_tokens([rest], self.tokenizer)[0] if rest else 0)
        return count_tokens([text], self.tokenizer)[0]

    def messages(self, messages: Sequence[Message]) -> int:
        return sum(self.text(m["content"]) + MESSAGE_OVERHEAD_TOKENS for m in messages)

    def prefix(self, system: str, shown: str | None = None) -> int:
        """Tokens of the prefix a request shares: its system message, and the trace when it opens the user turn."""
        return self.text(system) + MESSAGE_OVERHEAD_TOKENS + (self.text(shown) if shown else 0)


def _mementos_answer(mementos: Mapping[int, str]) -> str:
    return json.dumps({"mementos": [{"id": key, "memento": mementos[key]} for key in sorted(mementos)]})


def _verdict(fixes: bool) -> dict[str, object]:
    verdict: dict[str, object] = {key: 1 for key in (*RUBRIC, "deduction")}
    return verdict | {"fixes": [EXPECTED_FIX] * EXPECTED_FIXES if fixes else []}


def _verdicts_answer(ids: Sequence[int], with_fixes: float) -> str:
    """A per-trace judge's answer for `ids` (compact points), the first `with_fixes` share of them with fixes."""
    fixed = round(with_fixes * len(ids))
    verdicts = [
        {"id": key, "points": [1] * len(RUBRIC), "deduction": 1, "fixes": _verdict(index < fixed)["fixes"]}
        for index, key in enumerate(ids)
    ]
    return json.dumps({"verdicts": verdicts})


FEEDBACK = "\n".join(f"- {EXPECTED_FIX}" for _ in range(EXPECTED_FIXES))


def _in_play(rounds: int, first_pass: float, refined_pass: float) -> list[float]:
    """Expected share of a trace's mementos judged in each round (all in the first)."""
    shares, share = [], 1.0
    for number in range(rounds):
        shares.append(share)
        share *= 1 - (first_pass if number == 0 else refined_pass)
    return shares


def trace_estimate(
    trace: SegmentedTrace,
    settings: RecipeSettings,
    *,
    first_pass: float = EXPECTED_FIRST_PASS_RATE,
    refined_pass: float = EXPECTED_REFINED_PASS_RATE,
    reasks: float = EXPECTED_REASKS_PER_TRACE,
    prompts: PromptSet | None = None,
) -> dict[str, StepEstimate]:
    """The expected requests and tokens of annotating one trace, by step."""
    prompts = prompts or default_prompts()
    blocks = trace.block_texts()
    shown = trace_text(trace.problem, blocks)
    count = _Counter(trace.tokenizer, [shown])
    ids = list(range(1, len(blocks) + 1))
    mementos = {
        key: block[: max(int(len(block) * EXPECTED_MEMENTO_RATIO), 8)] for key, block in zip(ids, blocks, strict=True)
    }
    steps = {step: StepEstimate() for step in STEPS}
    trace_prefix = cacheable(count.prefix(prompts.compress, shown))

    conversation = compress_messages(prompts, shown, len(ids))
    answer = _mementos_answer(mementos)
    compress_prompt, answer_tokens = count.messages(conversation), count.text(answer)
    steps["compress"].add(1.0, compress_prompt, cacheable(count.prefix(prompts.compress)), answer_tokens)
    one = {ids[-1]: mementos[ids[-1]]}
    reask = reask_messages(conversation, answer, {ids[-1]: "missing"})
    steps["reask"].add(
        reasks, count.messages(reask), cacheable(compress_prompt + answer_tokens), count.text(_mementos_answer(one))
    )
    if settings.judge == JUDGE_OFF:
        return steps

    shares = _in_play(settings.max_rounds, first_pass, refined_pass)
    verdict_tokens = count.text(json.dumps(_verdict(fixes=True)))
    if settings.judge == PER_MEMENTO:
        judge_prefix = cacheable(count.prefix(prompts.judge))
        refine_prefix = cacheable(count.prefix(prompts.refine))
        for key, block in zip(ids, blocks, strict=True):
            memento = mementos[key]
            judged = count.messages(judge_messages(prompts, block, memento))
            refined = count.messages(refine_messages(prompts, block, memento, FEEDBACK))
            refined_answer = count.text(json.dumps({"memento": memento}))
            for number, share in enumerate(shares):
                steps["judge"].add(share, judged, judge_prefix, verdict_tokens)
                if number + 1 < len(shares):
                    steps["refine"].add(shares[number + 1], refined, refine_prefix, refined_answer)
        return steps

    for number, share in enumerate(shares):
        # A round's call is made when at least one memento is in play; given that, this many are.
        called = 1.0 if number == 0 else 1 - (1 - share) ** len(ids)
        graded = ids[: max(round(share * len(ids) / called), 1)] if called else []
        if not graded:
            break
        listed = {key: mementos[key] for key in graded}
        last = number + 1 == len(shares)
        judged = count.messages(judge_trace_messages(prompts, shown, listed, settings.threshold, last))
        failing = 0.0 if last else 1 - (first_pass if number == 0 else refined_pass)
        steps["judge"].add(called, judged, trace_prefix, count.text(_verdicts_answer(graded, failing)))
        if not last:
            following = shares[number + 1]
            weak_called = 1 - (1 - following) ** len(ids)
            weak = ids[: max(round(following * len(ids) / weak_called), 1)] if weak_called else []
            if weak:
                feedback = {key: FEEDBACK for key in weak}
                refined = refine_trace_messages(prompts, shown, {key: mementos[key] for key in weak}, feedback)
                answer = _mementos_answer({key: mementos[key] for key in weak})
                steps["refine"].add(weak_called, count.messages(refined), trace_prefix, count.text(answer))
    return steps


def _sample(
    in_dir: Path, selection: ShardSelection, limit: int | None, reader: str, expects: str, record: type[R]
) -> tuple[Iterator[R], int]:
    """Up to ESTIMATE_SAMPLE records spread over the selected shards of `in_dir`, and how many the run reads."""
    tasks = tasks_over(in_dir, selection, reader=reader, expects=expects)
    picked = [task for task in tasks if selection.picks(task.index)]
    limits = shard_limits(picked, limit)
    rows = {task.name: limits[task.name] if limits else parquet_rows(task.source) for task in picked}
    per_shard = math.ceil(ESTIMATE_SAMPLE / max(len(picked), 1))
    sample = itertools.chain.from_iterable(
        itertools.islice(iter_records(task.source, record), min(per_shard, rows[task.name])) for task in picked
    )
    return itertools.islice(sample, ESTIMATE_SAMPLE), sum(rows.values())


def _segmented_in_memory(segment: SegmentRequest, limit: int | None) -> tuple[Iterator[SegmentedTrace], int]:
    """A sample of `segment`'s input cut into blocks here, with the heuristic scorer, and the traces it reads.

    For a plan whose segment stage has not run yet: downloading costs nothing, segmenting with an LLM
    scorer does, so the estimate comes before either is paid for. An LLM scorer's blocks differ a little.
    """
    from openmementos.segment.scorers import HeuristicScorer
    from openmementos.segment.stage import segment_trace

    limits = [value for value in (segment.limit, limit) if value is not None]
    sources, traces = _sample(
        segment.in_dir, segment.shard, min(limits, default=None), "segment", "download", SourceTrace
    )
    scorer, settings = HeuristicScorer(), segment.settings()

    def cut() -> Iterator[SegmentedTrace]:
        for trace in sources:
            try:
                yield segment_trace(trace, scorer, settings)
            except TraceRejected:
                continue  # segment would quarantine it: annotate never sees it

    return cut(), traces


def estimate_annotate(request: AnnotateRequest, segment: SegmentRequest | None = None) -> CostEstimate:
    """The expected requests, tokens and cost of `run_annotate(request)`; sends nothing, writes nothing.

    With `segment` (the plan's segment stage, not run yet), the blocks come from cutting a sample of its
    download folder in memory instead of from `request.in_dir`.
    """
    settings = request.recipe()
    if segment is None:
        sample, traces = _sample(request.in_dir, request.shard, request.limit, STAGE, "segment", SegmentedTrace)
        basis = ""
    else:
        sample, traces = _segmented_in_memory(segment, request.limit)
        basis = f"blocks from cutting {segment.in_dir} in memory with the heuristic scorer"
    first_pass = EXPECTED_FIRST_PASS_RATE if request.expected_pass_rate is None else request.expected_pass_rate
    assumptions = {
        "first_pass_rate": first_pass,
        "refined_pass_rate": EXPECTED_REFINED_PASS_RATE,
        "reasks_per_trace": EXPECTED_REASKS_PER_TRACE,
        "memento_ratio": EXPECTED_MEMENTO_RATIO,
    }
    totals = {step: StepEstimate() for step in STEPS}
    counted = 0
    if settings.model != EXTRACTIVE:
        for trace in sample:
            counted += 1
            for step, usage in trace_estimate(trace, settings, first_pass=first_pass).items():
                totals[step] = totals[step] + usage
    per_trace = {step: usage.scaled(1 / counted) for step, usage in totals.items()} if counted else totals
    price = None if settings.model == EXTRACTIVE else request.prices(settings.model).price(settings.model)
    return CostEstimate(settings.model, settings.judge, traces, counted, per_trace, price, assumptions, basis)
