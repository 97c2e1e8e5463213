"""What an annotate run will send and cost, before it sends anything (`annotate --estimate`, `run --check`).

For a sample of the input traces (`ESTIMATE_SAMPLE`, spread over the shards), the recipe's own message
builders (`annotate.prompting`) make the requests it would send: compress, the expected re-asks, then
the judge and refinement rounds of the chosen `--judge` mode at the expected pass rates. Mementos are
not known before the run, so each stands in as the opening `EXPECTED_MEMENTO_RATIO` of its block, and
fixes as `EXPECTED_FIX`. Prompt tokens are counted with the trace's tokenizer, plus
`MESSAGE_OVERHEAD_TOKENS` per message; the per-trace averages are scaled to the whole input. Cached
tokens: the prefix a request shares with an earlier one of the same trace, or the system prompt all
traces share, under OpenAI's rule (`llm.cost.cacheable`).

Pure: reads the input folder, sends nothing, writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

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
from openmementos.llm.cost import ESTIMATE_SAMPLE, MESSAGE_OVERHEAD_TOKENS, CostEstimate, StepEstimate, cacheable
from openmementos.runtime.stage import sample_records
from openmementos.schema import SegmentedTrace
from openmementos.tokens import count_tokens

if TYPE_CHECKING:
    from openmementos.segment.request import SegmentRequest

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
STEPS = ("compress", "reask", "judge", "refine")


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


def estimate_annotate(request: AnnotateRequest, segment: SegmentRequest | None = None) -> CostEstimate:
    """The expected requests, tokens and cost of `run_annotate(request)`; sends nothing, writes nothing.

    With `segment` (the plan's segment stage, not run yet), the blocks come from cutting a sample of its
    download folder in memory instead of from `request.in_dir`.
    """
    settings = request.recipe()
    if segment is None:
        sample, traces = sample_records(
            request.in_dir, request.shard, request.limit, STAGE, "segment", SegmentedTrace, ESTIMATE_SAMPLE
        )
        basis = ""
    else:
        from openmementos.segment.estimate import blocks_in_memory

        sample, traces = blocks_in_memory(segment, request.limit, ESTIMATE_SAMPLE)
        basis = f"blocks from cutting {segment.in_dir} in memory with the heuristic scorer"
    if settings.model == EXTRACTIVE:
        empty = {step: StepEstimate() for step in STEPS}
        return CostEstimate(settings.model, "the offline extractive annotator", traces, 0, empty, None, basis=basis)
    first_pass = EXPECTED_FIRST_PASS_RATE if request.expected_pass_rate is None else request.expected_pass_rate
    totals = {step: StepEstimate() for step in STEPS}
    counted = 0
    for trace in sample:
        counted += 1
        for step, usage in trace_estimate(trace, settings, first_pass=first_pass).items():
            totals[step] = totals[step] + usage
    per_trace = {step: usage.scaled(1 / counted) for step, usage in totals.items()} if counted else totals
    assumed = (
        f"judge passes {first_pass:.0%} of first drafts and {EXPECTED_REFINED_PASS_RATE:.0%} of refined ones "
        f"(--expected-pass-rate), {EXPECTED_REASKS_PER_TRACE:g} re-asks per trace, mementos "
        f"{EXPECTED_MEMENTO_RATIO:.0%} of their block"
    )
    price = request.prices(settings.model).price(settings.model)
    return CostEstimate(settings.model, f"judge {settings.judge}", traces, counted, per_trace, price, assumed, basis)
