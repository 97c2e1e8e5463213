"""The `llm` boundary scorer: an LLM scores windows of boundaries through the shared engine.

A trace's n - 1 boundaries are cut into windows of `window` boundaries (16 by default); each window is
one request showing its sentences with the boundaries marked, answered with strict JSON
`{"scores": [...]}`: exactly one integer 0-3 per boundary (the schema's enum, which a grammar enforces;
integers out of range are clamped when read). An answer with the wrong count, a value that is not an
integer or no JSON is re-asked once (in the same conversation, saying what was wrong, with a varied seed
and temperature so a deterministic server does not repeat itself). A window that
still fails, or that the server refuses, takes the heuristic scores for its boundaries: it is counted
(`BoundaryScores.fallback_windows`, the row's `scorer` string, the run summary) and never padded with
zeros.

With `second_window` (coprime to the first, e.g. 11) every boundary is scored twice, in differently
cut windows, and the two scores are averaged and rounded to the nearest half point (halves round up).

Sentences longer than `MAX_SENTENCE_CHARS` are shown with their middle elided: a boundary is judged by
how one sentence ends and the next begins. The instructions are `prompts/boundary_scores.md`; its text
and the framing below are hashed into the scorer's name, recorded in every row.

`LLMScorerShards` runs the scorer on shards with one engine for the whole run, on an event loop in a
background thread (`llm.runner`): traces stream through a window of traces in flight (the engine bounds
the requests in flight and caches every answer, so a rerun pays nothing twice) and are cut into blocks
in input order as their scores arrive.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from openmementos.llm import ChatCompleter, ChatRequest, EngineStats, MalformedAnswer, RequestRejected, extract_json
from openmementos.llm.options import engine_opener
from openmementos.llm.request import REASK_TEMPERATURE_STEP, varied_sampling
from openmementos.llm.shards import LLMShardProcessor
from openmementos.resources import content_hash, read_prompt
from openmementos.runtime.manifest import Manifest
from openmementos.runtime.shardio import iter_records
from openmementos.runtime.stage import Quarantined, ShardTask, Stage, first_of
from openmementos.schema import SegmentedTrace, SourceTrace, TraceRejected
from openmementos.segment.request import STAGE, SegmentRequest, SegmentSettings
from openmementos.segment.scorers import BoundaryScores, HeuristicScorer
from openmementos.segment.stage import assemble, sentences_of
from openmementos.sentences import Span

MAX_SENTENCE_CHARS = 1_200
WINDOW_USER = "Score the {count} marked boundaries, B{first} to B{last}.\n\n{body}"
BOUNDARY = "\n<<B{id}>>\n"
SENTENCE = "[S{id}] {text}"
ELISION = " [... {count} characters omitted ...] "
REASK_USER = (
    "That answer cannot be used: {problem}. Answer again with JSON only: "
    '{{"scores": [...]}} with exactly {count} integers from 0 to 3, for B{first} to B{last} in order.'
)


@cache
def prompt_version() -> str:
    """Content hash of the instructions, every template around the data, the answer schema and the
    re-ask's sampling step."""
    schema = json.dumps(scores_schema(1), sort_keys=True)
    templates = (WINDOW_USER, BOUNDARY, SENTENCE, ELISION, REASK_USER)
    return content_hash(read_prompt("boundary_scores.md"), *templates, schema, str(REASK_TEMPERATURE_STEP))


def windows(boundaries: int, size: int) -> list[range]:
    """Consecutive boundary ranges of `size` (the last may be shorter)."""
    return [range(start, min(start + size, boundaries)) for start in range(0, boundaries, size)]


def _shown(text: str) -> str:
    text = text.strip()
    if len(text) <= MAX_SENTENCE_CHARS:
        return text
    half = MAX_SENTENCE_CHARS // 2
    return text[:half] + ELISION.format(count=len(text) - 2 * half) + text[-half:]


def window_messages(sentences: Sequence[str], boundaries: range) -> list[dict[str, str]]:
    """The conversation that asks for one window: instructions, then the sentences with the marks."""
    first, last = boundaries.start, boundaries.stop - 1
    parts = [SENTENCE.format(id=first, text=_shown(sentences[first]))]
    for boundary in boundaries:
        parts.append(BOUNDARY.format(id=boundary))
        parts.append(SENTENCE.format(id=boundary + 1, text=_shown(sentences[boundary + 1])))
    user = WINDOW_USER.format(count=len(boundaries), first=first, last=last, body="".join(parts))
    return [{"role": "system", "content": read_prompt("boundary_scores.md")}, {"role": "user", "content": user}]


SCORES = (0, 1, 2, 3)


def scores_schema(count: int) -> dict[str, Any]:
    scores = {"type": "array", "items": {"type": "integer", "enum": list(SCORES)}}
    scores.update(minItems=count, maxItems=count)
    return {
        "type": "object",
        "properties": {"scores": scores},
        "required": ["scores"],
        "additionalProperties": False,
    }


def parse_scores(text: str, count: int) -> list[int]:
    """Exactly `count` integer scores from an answer, clamped to 0-3; ValueError saying what is wrong."""
    try:
        value = extract_json(text)
    except MalformedAnswer:
        raise ValueError("it is not JSON") from None
    scores = value.get("scores") if isinstance(value, dict) else value
    if not isinstance(scores, list):
        raise ValueError('it has no "scores" list')
    if len(scores) != count:
        raise ValueError(f"it has {len(scores)} scores for {count} boundaries")
    for score in scores:
        if isinstance(score, bool) or not isinstance(score, int | float) or score != int(score):
            raise ValueError(f"{score!r} is not an integer from 0 to 3")
    return [min(max(int(score), SCORES[0]), SCORES[-1]) for score in scores]


def to_half_points(value: float) -> float:
    """The nearest multiple of 0.5 (halves round up): 2.25 -> 2.5, 1.75 -> 2.0."""
    return math.floor(value * 2 + 0.5) / 2


@dataclass
class ScoringTally:
    """What the LLM scorer did, for the run summary; tokens and cost are the engine's (fresh answers)."""

    engine: EngineStats = field(default_factory=EngineStats)
    traces: int = 0
    windows: int = 0
    reasked: int = 0
    fallback_windows: int = 0
    traces_with_fallback: int = 0
    requests: int = 0
    refusals: list[str] = field(default_factory=list)

    @property
    def prompt_tokens(self) -> int:
        return self.engine.prompt_tokens

    @property
    def completion_tokens(self) -> int:
        return self.engine.completion_tokens

    @property
    def cost_usd(self) -> float:
        return self.engine.cost_usd

    def render(self) -> str:
        lines = [
            f"LLM scoring: {self.windows:,} windows for {self.traces:,} traces, {self.reasked:,} re-asked, "
            f"{self.fallback_windows:,} fell back to the heuristic ({self.traces_with_fallback:,} traces); "
            f"{self.requests:,} answers ({self.engine.sent:,} requests sent), {self.prompt_tokens:,} prompt + "
            f"{self.completion_tokens:,} completion tokens paid, ${self.cost_usd:.4f}"
        ]
        if forms := ", ".join(f"{url}: {form}" for url, form in self.engine.structured_output.items()):
            lines.append(f"structured output: {forms}")
        lines += [f"note: {note}" for note in self.engine.notes]
        return "\n".join(lines)


class LLMScorer:
    """Scores boundaries with an LLM through `engine`: an `AsyncBoundaryScorer` (see the module docstring)."""

    def __init__(
        self,
        engine: ChatCompleter,
        model: str,
        window: int = 16,
        second_window: int | None = None,
    ) -> None:
        if window < 2 or (second_window is not None and (second_window < 2 or math.gcd(window, second_window) != 1)):
            raise ValueError(f"windows must be >= 2 and coprime, got {window} and {second_window}")
        self.engine = engine
        self.model = model
        self.window = window
        self.second_window = second_window
        self.tally = ScoringTally(engine.stats)
        self.heuristic = HeuristicScorer()

    @property
    def name(self) -> str:
        return self.name_of(self.model, self.window, self.second_window)

    @staticmethod
    def name_of(model: str, window: int, second_window: int | None) -> str:
        sizes = f"{window}+{second_window}" if second_window else str(window)
        return f"llm:{model}:w{sizes}:p{prompt_version()}"

    @staticmethod
    def options(model: str, window: int, second_window: int | None) -> dict[str, Any]:
        """What the scores depend on (recorded in the manifest; a resume must match it)."""
        return {
            "scorer": "llm",
            "model": model,
            "window": window,
            "second_window": second_window,
            "prompt_version": prompt_version(),
        }

    async def score(self, sentences: Sequence[str], problem: str = "") -> BoundaryScores:
        fallback = self.heuristic.score(sentences)
        count = len(sentences) - 1
        sizes = [self.window] + ([self.second_window] if self.second_window else [])
        passes = await asyncio.gather(*(self._pass(sentences, size, fallback) for size in sizes))
        scores, reasons = [], []
        for boundary in range(count):
            values = [scores_of_pass[boundary] for scores_of_pass, _, _ in passes]
            from_rules = [fell_back[boundary] for _, fell_back, _ in passes]
            scores.append(to_half_points(sum(values) / len(values)))
            reasons.append(f"heuristic:{fallback.reasons[boundary]}" if all(from_rules) else "llm")
        failed = sum(failures for _, _, failures in passes)
        self.tally.traces += 1
        self.tally.traces_with_fallback += failed > 0
        windows_total = sum(len(windows(count, size)) for size in sizes)
        return BoundaryScores(scores, reasons, fallback_windows=failed, windows=windows_total)

    async def _pass(
        self, sentences: Sequence[str], size: int, fallback: BoundaryScores
    ) -> tuple[list[float], list[bool], int]:
        """One pass: scores per boundary, whether each came from the heuristic, and the failed windows."""
        ranges = windows(len(sentences) - 1, size)
        answers = await asyncio.gather(*(self._window(sentences, boundaries) for boundaries in ranges))
        scores: list[float] = []
        fell_back: list[bool] = []
        for boundaries, answer in zip(ranges, answers, strict=True):
            if answer is None:
                scores.extend(fallback.scores[b] for b in boundaries)
                fell_back.extend([True] * len(boundaries))
            else:
                scores.extend(float(s) for s in answer)
                fell_back.extend([False] * len(boundaries))
        return scores, fell_back, answers.count(None)

    async def _window(self, sentences: Sequence[str], boundaries: range) -> list[int] | None:
        """The scores of one window, re-asked once; None when the answer stays unusable or is refused."""
        self.tally.windows += 1
        count, first, last = len(boundaries), boundaries.start, boundaries.stop - 1
        messages = window_messages(sentences, boundaries)
        for attempt in range(2):
            temperature, seed = varied_sampling(0.0, attempt)
            request = ChatRequest(
                model=self.model,
                messages=messages,
                temperature=temperature,
                max_tokens=16 + 4 * count,
                json_schema=scores_schema(count),
                seed=seed,
            )
            try:
                result = await self.engine.complete(request)
            except RequestRejected as refused:
                self.tally.refusals.append(str(refused))
                break
            self.tally.requests += 1
            try:
                return parse_scores(result.text, count)
            except ValueError as problem:
                if attempt == 0:
                    self.tally.reasked += 1
                    reask = REASK_USER.format(problem=problem, count=count, first=first, last=last)
                    messages = [
                        *messages,
                        {"role": "assistant", "content": result.text},
                        {"role": "user", "content": reask},
                    ]
        self.tally.fallback_windows += 1
        return None


Split = tuple[list[Span], list[str]]
Prepared = tuple[SourceTrace, Split | TraceRejected]
"""A trace read from its shard with its sentences (split in the main thread, before scoring)."""
Scored = tuple[Prepared, BoundaryScores | None]


class LLMScorerShards(LLMShardProcessor[Prepared, Scored]):
    """The shard processor of the LLM scorer: traces stream through a window of traces being scored.

    Each trace is split into sentences as it is read (in this thread), its boundaries scored on the loop,
    and its blocks cut in input order as the scores arrive. `limits`: the traces each shard contributes
    under --limit.
    """

    def __init__(
        self,
        open_engine: Callable[[], Awaitable[ChatCompleter]],
        model: str,
        window: int,
        second_window: int | None,
        settings: SegmentSettings,
        traces_in_flight: int = 256,
        limits: dict[str, int] | None = None,
    ) -> None:
        super().__init__(open_engine, traces_in_flight, name="segment-loop")
        self.model = model
        self.windows = (window, second_window)
        self.settings = settings
        self.limits = limits
        self.tally = ScoringTally()
        self.scorer: LLMScorer | None = None

    def started(self, engine: ChatCompleter) -> None:
        self.scorer = LLMScorer(engine, self.model, *self.windows)
        self.tally = self.scorer.tally

    def items(self, task: ShardTask[Path]) -> Iterator[Prepared]:
        traces = first_of(iter_records(task.source, SourceTrace), self.limits, task.name)
        return ((trace, _split(trace)) for trace in traces)

    async def process(self, item: Prepared) -> Scored:
        """Score one trace's boundaries (on the loop); a trace that could not be split passes through."""
        assert self.scorer is not None, "use LLMScorerShards as a context manager"
        _, split = item
        return item, None if isinstance(split, TraceRejected) else await self.scorer.score(split[1])

    def finish(self, result: Scored) -> SegmentedTrace | Quarantined:
        (trace, split), scores = result
        try:
            if isinstance(split, TraceRejected):
                raise split
            assert scores is not None
            return assemble(trace, *split, scores, self.label(scores), self.settings)
        except TraceRejected as rejected:
            return Quarantined(trace.id, rejected.reason, rejected.detail, trace)

    def label(self, scores: BoundaryScores) -> str:
        """The row's `scorer`: the LLM scorer's name, plus how many windows the heuristic scored."""
        name = LLMScorer.name_of(self.model, *self.windows)
        return (
            f"{name};heuristic_windows={scores.fallback_windows}/{scores.windows}" if scores.fallback_windows else name
        )


def _split(trace: SourceTrace) -> Split | TraceRejected:
    try:
        return sentences_of(trace)
    except TraceRejected as rejected:
        return rejected


def run_llm_scorer(
    request: SegmentRequest, tasks: Sequence[ShardTask[Path]], limits: dict[str, int] | None
) -> tuple[Manifest, str]:
    """The segment stage with the LLM scorer: the manifest, and what the scorer did (its tally, rendered)."""
    assert request.model is not None and request.out_dir is not None  # the request checks both
    settings = request.settings()
    open_engine = engine_opener(request, request.model, request.out_dir)
    with LLMScorerShards(
        open_engine, request.model, request.window, request.second_window, settings, limits=limits
    ) as process:
        stage = Stage(
            name=STAGE,
            out_dir=request.out_dir,
            model=SegmentedTrace,
            process=process,
            options={
                **settings.model_dump(),
                **LLMScorer.options(request.model, request.window, request.second_window),
            },
            description=f"segment (llm {request.model})",
        )
        manifest = stage.run(tasks, request.shard, request.make_executor())
    return manifest, process.tally.render()
