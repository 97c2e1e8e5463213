"""The memento recipe for one trace (SPEC 4.5-4.6): compress, re-ask what is missing, judge, refine.

1. **Compress.** One call sees the problem (context only) and every block, numbered, and answers one
   memento per block as JSON (structured output where the server takes it, tolerant parsing always).
2. **Re-ask.** Blocks whose memento is missing or breaks a memento rule (`openmementos.mementos`, the
   rules `validate` applies with the same bounds: empty, a placeholder, a delimiter, non-ASCII when
   asked, a memento/block token ratio out of range) are asked for again, by number, in a follow-up to
   the same conversation (up to `max_reasks` times). Re-ask k is sent with seed k and the temperature
   raised by `llm.request.REASK_TEMPERATURE_STEP` per step (up to 1), so a deterministic server does not answer
   the same junk again and the response cache never replays a failed answer as a re-ask (the schedule
   is hashed into `prompt_version`). Nothing is ever padded: a trace still short of a full set is
   quarantined (`mementos_incomplete`, naming the blocks and why).
3. **Judge.** Every memento gets a verdict: rubric points (SPEC 4.6) summed into a 0-10 score, and
   3-5 fixes. `--judge per-memento` (the paper's) makes one judge call per memento (its block alone);
   `--judge per-trace` makes one call per round for every memento in play (the trace once, the rubric
   once, verdicts keyed by block number and compact, fixes only for mementos below the threshold and
   none in the last round, where no refinement uses them). A verdict cut at its token limit that holds
   every rubric number is used; an unreadable one is asked for once more (varied like a re-ask; per
   trace: only the mementos without a verdict), then the trace is quarantined (`judge_unreadable`,
   saying what was wrong): a score we cannot read is not a score we may publish.
4. **Refine.** A memento scoring below `threshold` is rewritten from (block, memento, fixes) and judged
   again, for at most `max_rounds` judge rounds in all (per trace: one refinement call for all weak
   mementos, answered by block number; ones missing or breaking a rule are re-asked like missing
   mementos). Every round's score, fixes and judge tokens are kept (`MementoReview.rounds`; a per-trace
   call's tokens are shared out among the mementos it graded). The version kept is the best-scoring one
   (ties: the later), recorded in `MementoReview.kept`, so `final_score` is the score of the published
   memento; a memento still below the threshold after the last round is kept with that score, for
   `validate` to filter on. A refinement that comes back unusable ends that memento's rounds (the best
   version so far is kept).

A request the server refuses outright (HTTP 4xx, e.g. a prompt over the context window) quarantines
the trace (`request_rejected`). Transient failures are retried by the engine; when its attempts run out
the error propagates and stops the run: rerunning resumes it, every finished answer coming from the
cache, instead of quarantining a whole outage's worth of traces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from openmementos.annotate.parsing import (
    FIX_MAX_CHARS,
    MAX_FIXES,
    REFINED_SCHEMA,
    VERDICT_SCHEMA,
    Verdict,
    mementos_schema,
    parse_mementos,
    parse_refined,
    parse_verdict,
    parse_verdicts,
    verdicts_schema,
)
from openmementos.annotate.prompting import (
    PromptSet,
    compress_messages,
    default_prompts,
    describe_problems,
    judge_messages,
    judge_retry_messages,
    judge_trace_messages,
    judge_trace_retry_messages,
    reask_messages,
    refine_messages,
    refine_trace_messages,
    trace_text,
)
from openmementos.annotate.request import PER_MEMENTO, PER_TRACE, RecipeSettings
from openmementos.llm import ChatCompleter, ChatRequest, ChatResult, MalformedAnswer, RequestRejected
from openmementos.llm.request import varied_sampling
from openmementos.mementos import MementoRules, memento_problems
from openmementos.runtime.stage import Quarantined
from openmementos.schema import (
    AnnotatedTrace,
    JudgeRound,
    MementoReview,
    SegmentedTrace,
    TraceRejected,
    Usage,
    sum_usage,
)
from openmementos.tokens import count_tokens

T = TypeVar("T")

VERDICT_MAX_TOKENS = 64 + MAX_FIXES * FIX_MAX_CHARS // 3
"""Answer budget of one verdict: the rubric numbers and at most MAX_FIXES fixes of FIX_MAX_CHARS."""
OUTPUT_RATIO_CAP = 0.5
"""Answer budget for mementos: half the blocks' tokens (the target is 10-20 %) plus JSON overhead."""
ROLES = ("compress", "reask", "judge", "refine")


@dataclass
class Spend:
    """LLM usage of one trace, by recipe step (compress, reask, judge, refine)."""

    by_role: dict[str, Usage] = field(default_factory=dict)

    def add(self, role: str, result: ChatResult) -> None:
        paid = Usage(
            requests=1,
            prompt_tokens=result.prompt_tokens,
            cached_prompt_tokens=result.cached_prompt_tokens,
            completion_tokens=result.completion_tokens,
            cost_usd=result.cost_usd,
        )
        self.by_role[role] = self.by_role.get(role, Usage()) + paid

    def total(self) -> Usage:
        return sum_usage(self.by_role.values())


@dataclass(frozen=True)
class Outcome:
    """What the recipe made of one trace, and what that cost."""

    item: AnnotatedTrace | Quarantined
    spend: Spend


async def gather_all(awaitables: Sequence[Awaitable[T]]) -> list[T]:
    """`asyncio.gather`, but the first failure cancels the rest (no paying for a trace already lost)."""
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


class Recipe:
    """Annotates traces through an LLM engine (live or batch: anything with `complete`)."""

    def __init__(self, engine: ChatCompleter, settings: RecipeSettings, prompts: PromptSet | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.prompts = prompts or default_prompts()

    @property
    def prompt_version(self) -> str:
        return self.prompts.version

    async def annotate(self, trace: SegmentedTrace) -> Outcome:
        spend = Spend()
        try:
            item: AnnotatedTrace | Quarantined = await self._annotate(trace, spend)
        except TraceRejected as failure:
            item = Quarantined(trace.id, failure.reason, failure.detail, trace)
        except RequestRejected as exc:
            item = Quarantined(trace.id, "request_rejected", str(exc), trace)
        except ValidationError as exc:
            item = Quarantined(trace.id, "invalid_annotation", str(exc).splitlines()[0], trace)
        return Outcome(item, spend)

    async def _annotate(self, trace: SegmentedTrace, spend: Spend) -> AnnotatedTrace:
        blocks = trace.block_texts()
        shown = trace_text(trace.problem, blocks)
        mementos = await self._compress(trace, shown, spend)
        reviews: list[MementoReview] = []
        if self.settings.judge == PER_TRACE:
            mementos, reviews = await self._review_trace(trace, shown, mementos, spend)
        elif self.settings.judge == PER_MEMENTO:
            reviewed = await gather_all(
                [
                    self._review(block, tokens, memento, trace.tokenizer, spend)
                    for block, tokens, memento in zip(blocks, trace.block_tokens, mementos, strict=True)
                ]
            )
            mementos = [memento for memento, _ in reviewed]
            reviews = [review for _, review in reviewed]
        return AnnotatedTrace(
            **trace.model_dump(),
            mementos=mementos,
            memento_tokens=count_tokens(mementos, trace.tokenizer),
            reviews=reviews,
            annotator_model=self.settings.model,
            prompt_version=self.prompt_version,
            usage=spend.total(),
        )

    async def _ask(
        self,
        role: str,
        messages: list[dict[str, str]],
        schema: dict[str, Any],
        max_tokens: int,
        spend: Spend,
        attempt: int = 0,
    ) -> ChatResult:
        """One request; `attempt` k > 0 (the k-th re-ask of the same thing) varies seed and temperature."""
        temperature, seed = varied_sampling(self.settings.temperature, attempt)
        request = ChatRequest(
            model=self.settings.model,
            messages=messages,
            temperature=temperature,
            max_tokens=max_tokens,
            json_schema=schema,
            seed=seed,
        )
        result = await self.engine.complete(request)
        spend.add(role, result)
        return result

    # -- compress and re-ask ---------------------------------------------------------------------------

    async def _compress(self, trace: SegmentedTrace, shown: str, spend: Spend) -> list[str]:
        ids = list(range(1, len(trace.blocks) + 1))
        conversation = compress_messages(self.prompts, shown, len(ids))
        mementos, problems = await self._mementos("compress", conversation, ids, trace, spend)
        if problems:
            raise TraceRejected(
                "mementos_incomplete",
                f"no usable memento for block(s) {describe_problems(problems)} "
                f"after {self.settings.max_reasks} re-ask(s)",
            )
        return [mementos[key] for key in ids]

    async def _mementos(
        self, role: str, conversation: list[dict[str, str]], ids: list[int], trace: SegmentedTrace, spend: Spend
    ) -> tuple[dict[int, str], dict[int, str]]:
        """Mementos for the blocks `ids`, asked in `conversation`, with up to `max_reasks` re-asks for the
        ones missing or breaking a rule: the usable mementos, and the problems of the others."""
        result = await self._ask(role, conversation, mementos_schema(ids), _memento_budget(trace, ids), spend)
        mementos: dict[int, str] = {}
        problems = _accept(result, ids, trace, mementos, self.settings)
        for attempt in range(1, self.settings.max_reasks + 1):
            if not problems:
                break
            messages = reask_messages(conversation, result.text, problems)
            asked = sorted(problems)
            budget = _memento_budget(trace, asked)
            result = await self._ask("reask", messages, mementos_schema(asked), budget, spend, attempt)
            problems = _accept(result, asked, trace, mementos, self.settings)
        return mementos, problems

    # -- judge and refine ------------------------------------------------------------------------------

    async def _review(
        self, block: str, block_tokens: int, memento: str, tokenizer: str, spend: Spend
    ) -> tuple[str, MementoReview]:
        versions: list[str] = []
        rounds: list[JudgeRound] = []
        current = memento
        for number in range(1, self.settings.max_rounds + 1):
            verdict, paid = await self._judge(block, current, spend)
            versions.append(current)
            rounds.append(JudgeRound(score=verdict.score, feedback=verdict.feedback, **paid))
            if verdict.score >= self.settings.threshold or number == self.settings.max_rounds:
                break
            try:
                current = await self._refine(block, block_tokens, current, verdict.feedback, tokenizer, spend)
            except MalformedAnswer:
                break
        return _kept(versions, rounds, PER_MEMENTO)

    async def _judge(self, block: str, memento: str, spend: Spend) -> tuple[Verdict, dict[str, int]]:
        messages = judge_messages(self.prompts, block, memento)
        results = [await self._ask("judge", messages, VERDICT_SCHEMA, VERDICT_MAX_TOKENS, spend)]
        try:
            verdict = parse_verdict(results[0].text, results[0].cut_at_limit)
        except MalformedAnswer as first:
            retry = judge_retry_messages(messages, results[0].text)
            results.append(await self._ask("judge", retry, VERDICT_SCHEMA, VERDICT_MAX_TOKENS, spend, attempt=1))
            try:
                verdict = parse_verdict(results[1].text, results[1].cut_at_limit)
            except MalformedAnswer as second:
                raise TraceRejected("judge_unreadable", f"asked twice: {first}; then: {second}") from None
        paid = {
            "prompt_tokens": sum(r.prompt_tokens for r in results),
            "completion_tokens": sum(r.completion_tokens for r in results),
        }
        return verdict, paid

    async def _refine(
        self, block: str, block_tokens: int, memento: str, feedback: str, tokenizer: str, spend: Spend
    ) -> str:
        messages = refine_messages(self.prompts, block, memento, feedback)
        budget = int(block_tokens * OUTPUT_RATIO_CAP) + 256
        result = await self._ask("refine", messages, REFINED_SCHEMA, budget, spend)
        refined = parse_refined(result.text)
        if broken := memento_problems(refined, count_tokens([refined], tokenizer)[0], block_tokens, self.settings):
            raise MalformedAnswer("the refined memento " + "; ".join(what for _, what in broken))
        return refined

    # -- judge and refine, per trace -------------------------------------------------------------------

    async def _review_trace(
        self, trace: SegmentedTrace, shown: str, mementos: list[str], spend: Spend
    ) -> tuple[list[str], list[MementoReview]]:
        """Rounds of one judge call for every memento in play, and one refinement call for the weak ones."""
        ids = list(range(1, len(mementos) + 1))
        current = dict(zip(ids, mementos, strict=True))
        versions: dict[int, list[str]] = {key: [] for key in ids}
        rounds: dict[int, list[JudgeRound]] = {key: [] for key in ids}
        in_play = ids
        for number in range(1, self.settings.max_rounds + 1):
            last = number == self.settings.max_rounds
            verdicts, paid = await self._judge_trace(shown, {key: current[key] for key in in_play}, last, spend)
            prompt_shares = _shares(paid["prompt_tokens"], len(in_play))
            completion_shares = _shares(paid["completion_tokens"], len(in_play))
            for index, key in enumerate(in_play):
                versions[key].append(current[key])
                rounds[key].append(
                    JudgeRound(
                        score=verdicts[key].score,
                        feedback=verdicts[key].feedback,
                        prompt_tokens=prompt_shares[index],
                        completion_tokens=completion_shares[index],
                    )
                )
            weak = [key for key in in_play if verdicts[key].score < self.settings.threshold]
            if not weak or last:
                break
            conversation = refine_trace_messages(
                self.prompts, shown, {key: current[key] for key in weak}, {key: verdicts[key].feedback for key in weak}
            )
            refined, _unusable = await self._mementos("refine", conversation, weak, trace, spend)
            current.update(refined)
            in_play = sorted(refined)  # an unusable refinement ends that memento's rounds
            if not in_play:
                break
        kept = [_kept(versions[key], rounds[key], PER_TRACE) for key in ids]
        return [memento for memento, _ in kept], [review for _, review in kept]

    async def _judge_trace(
        self, shown: str, mementos: dict[int, str], last_round: bool, spend: Spend
    ) -> tuple[dict[int, Verdict], dict[str, int]]:
        """A verdict for every memento in `mementos` (by block number), from one call and at most one retry."""
        ids = sorted(mementos)
        messages = judge_trace_messages(self.prompts, shown, mementos, self.settings.threshold, last_round)
        budget = VERDICT_MAX_TOKENS * len(ids) + 64
        results = [await self._ask("judge", messages, verdicts_schema(ids, not last_round), budget, spend)]
        answer = parse_verdicts(results[0].text, ids, results[0].cut_at_limit)
        verdicts = dict(answer.verdicts)
        if answer.problems:
            retry = judge_trace_retry_messages(messages, results[0].text, answer.problems)
            asked = sorted(answer.problems)
            budget = VERDICT_MAX_TOKENS * len(asked) + 64
            schema = verdicts_schema(asked, not last_round)
            results.append(await self._ask("judge", retry, schema, budget, spend, attempt=1))
            second = parse_verdicts(results[1].text, asked, results[1].cut_at_limit)
            verdicts.update(second.verdicts)
            if second.problems:
                raise TraceRejected(
                    "judge_unreadable",
                    f"asked twice: {describe_problems(answer.problems)}; then: {describe_problems(second.problems)}",
                )
        paid = {
            "prompt_tokens": sum(r.prompt_tokens for r in results),
            "completion_tokens": sum(r.completion_tokens for r in results),
        }
        return verdicts, paid


def _kept(versions: list[str], rounds: list[JudgeRound], judge: str) -> tuple[str, MementoReview]:
    """The best-scoring version (ties: the later) and the review that records its rounds."""
    kept = max(range(len(rounds)), key=lambda index: (rounds[index].score, index))
    return versions[kept], MementoReview(rounds=rounds, kept=kept, judge=judge)


def _shares(total: int, parts: int) -> list[int]:
    """`total` split into `parts` near-equal integers that add up to it."""
    return [total // parts + (1 if index < total % parts else 0) for index in range(parts)]


def _memento_budget(trace: SegmentedTrace, ids: Sequence[int] | Mapping[int, str]) -> int:
    """The answer-token cap for mementos of the blocks numbered `ids` (generous; guards runaway output)."""
    block_tokens = sum(trace.block_tokens[key - 1] for key in ids)
    return int(block_tokens * OUTPUT_RATIO_CAP) + 64 * len(ids) + 256


def _accept(
    answer: ChatResult, ids: Sequence[int], trace: SegmentedTrace, mementos: dict[int, str], rules: MementoRules
) -> dict[int, str]:
    """Store the usable mementos of `answer` into `mementos`; return the problems of the other ids.

    Usable means present and breaking none of the memento rules (`openmementos.mementos`, the ones
    `validate` applies), so nothing annotate keeps is rejected later.
    """
    parsed = parse_mementos(answer.text, ids)
    cut = ", the answer was cut at its token limit" if answer.cut_at_limit else ""
    problems = {key: problem + cut for key, problem in parsed.problems.items()}
    keys = sorted(parsed.usable)
    sizes = count_tokens([parsed.usable[key] for key in keys], trace.tokenizer)
    for key, size in zip(keys, sizes, strict=True):
        broken = memento_problems(parsed.usable[key], size, trace.block_tokens[key - 1], rules)
        if broken:
            problems[key] = "; ".join(what for _, what in broken)
        else:
            mementos[key] = parsed.usable[key]
    return problems
