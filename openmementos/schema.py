"""Record types of every stage: the one source of truth for fields, invariants and Arrow types.

Stages pass records along as parquet shards: `SourceTrace` (download) -> `SegmentedTrace` (segment)
-> `AnnotatedTrace` (annotate). The published rows `DefaultRow` and `FullRow` carry exactly the
public OpenMementos column names and dtypes. Arrow schemas and `datasets.Features` are derived from
these models by `arrow_schema` / `features`, never written out by hand.

Character offsets are Python string indices (code points) into `reasoning`.
"""

from __future__ import annotations

import hashlib
import types
from collections.abc import Iterable
from functools import cache
from typing import Any, Self, Union, get_args, get_origin

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from openmementos.format import (
    THINK_CLOSE,
    THINK_OPEN,
    find_delimiter,
    parse_response,
    render_response,
)


class TraceRejected(ValueError):
    """A trace that cannot enter the pipeline; `reason` is a short stable code for counting."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# --------------------------------------------------------------------------- source traces


class SourceTrace(Record):
    """One reasoning trace, split into the parts the pipeline needs, losslessly.

    The original assistant message is `think_prefix + "<think>" + reasoning + "</think>" +
    answer_prefix + answer` (see `assistant_text`).
    """

    id: str
    problem: str
    reasoning: str = Field(description="The text between <think> and </think>, verbatim.")
    answer: str = Field(description="The final answer after </think>, without its leading whitespace.")
    domain: str
    source: str
    difficulty: int | None = None
    think_prefix: str = Field(default="", description="Text before <think> in the assistant message.")
    answer_prefix: str = Field(default="", description="Whitespace between </think> and the answer.")

    def assistant_text(self) -> str:
        return f"{self.think_prefix}{THINK_OPEN}{self.reasoning}{THINK_CLOSE}{self.answer_prefix}{self.answer}"

    @classmethod
    def from_assistant_text(cls, text: str, **fields: Any) -> Self:
        """Split an assistant message `... <think> reasoning </think> answer` into a SourceTrace."""
        opens, closes = text.count(THINK_OPEN), text.count(THINK_CLOSE)
        if opens == 0:
            raise TraceRejected("no_think", "the assistant text has no <think> section")
        if closes == 0:
            raise TraceRejected("unclosed_think", "<think> is never closed (truncated generation?)")
        if opens > 1 or closes > 1:
            raise TraceRejected("multiple_think", f"{opens} <think> and {closes} </think> tags")
        think_prefix, rest = text.split(THINK_OPEN)
        if THINK_CLOSE not in rest:
            raise TraceRejected("misordered_think", "</think> comes before <think>")
        reasoning, after = rest.split(THINK_CLOSE)
        answer = after.lstrip()
        for name, value in (("problem", fields.get("problem", "")), ("assistant message", text)):
            if delimiter := find_delimiter(value):
                raise TraceRejected("contains_delimiter", f"the {name} contains the reserved {delimiter!r}")
        return cls(
            reasoning=reasoning,
            answer=answer,
            think_prefix=think_prefix,
            answer_prefix=after[: len(after) - len(answer)],
            **fields,
        )

    @classmethod
    def from_openthoughts(cls, row: dict[str, Any]) -> Self:
        """Convert an OpenThoughts3 row (difficulty, source, domain, conversations) to a SourceTrace.

        Raises `TraceRejected` with the reason for rows that cannot be used.
        """
        conversations = row.get("conversations")
        if not isinstance(conversations, list) or not conversations:
            raise TraceRejected("bad_conversations", "conversations is missing or not a list")
        turns: dict[str, list[str]] = {}
        for turn in conversations:
            if not isinstance(turn, dict) or not isinstance(turn.get("value"), str):
                raise TraceRejected("not_a_string", "a conversation turn has no string value")
            turns.setdefault(str(turn.get("from")), []).append(turn["value"])
        humans, gpts = turns.get("human", []), turns.get("gpt", [])
        if len(humans) != 1 or len(gpts) != 1:
            raise TraceRejected(
                "bad_conversations", f"expected one human and one gpt turn, got {len(humans)} and {len(gpts)}"
            )
        for name in ("domain", "source"):
            if not isinstance(row.get(name), str):
                raise TraceRejected("not_a_string", f"{name} is {type(row.get(name)).__name__}, not a string")
        difficulty = row.get("difficulty")
        if difficulty is not None and (isinstance(difficulty, bool) or not isinstance(difficulty, int)):
            raise TraceRejected("bad_difficulty", f"difficulty is {difficulty!r}, not an integer")
        problem, assistant = humans[0], gpts[0]
        trace_id = row.get("id") or row.get("task_id") or stable_id(problem, assistant)
        return cls.from_assistant_text(
            assistant,
            id=str(trace_id),
            problem=problem,
            domain=row["domain"],
            source=row["source"],
            difficulty=difficulty,
        )


def stable_id(*parts: str) -> str:
    """A short content hash, stable across runs and machines, for corpora that carry no id."""
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()
    return f"t{digest[:20]}"


# --------------------------------------------------------------------------- segmentation


class SegmentedTrace(SourceTrace):
    """A trace cut into sentences and blocks. Blocks are inclusive `[first, last]` sentence ranges."""

    sentence_spans: list[list[int]] = Field(description="[start, end) character spans tiling reasoning")
    sentence_tokens: list[int]
    boundary_scores: list[float] = Field(description="Score 0-3 of the boundary after each sentence but the last")
    blocks: list[list[int]]
    block_tokens: list[int]
    scorer: str
    tokenizer: str

    @model_validator(mode="after")
    def _check_segmentation(self) -> Self:
        check_spans_tile(self.sentence_spans, len(self.reasoning))
        n = len(self.sentence_spans)
        if len(self.sentence_tokens) != n:
            raise ValueError(f"{len(self.sentence_tokens)} sentence token counts for {n} sentences")
        if len(self.boundary_scores) != n - 1:
            raise ValueError(f"{len(self.boundary_scores)} boundary scores for {n} sentences (need {n - 1})")
        check_blocks_cover(self.blocks, n)
        if len(self.block_tokens) != len(self.blocks):
            raise ValueError(f"{len(self.block_tokens)} block token counts for {len(self.blocks)} blocks")
        return self

    def sentences(self) -> list[str]:
        return [self.reasoning[start:end] for start, end in self.sentence_spans]

    def block_texts(self) -> list[str]:
        spans = self.sentence_spans
        return [self.reasoning[spans[first][0] : spans[last][1]] for first, last in self.blocks]


def check_spans_tile(spans: list[list[int]], length: int) -> None:
    """Spans must be non-empty, contiguous and cover [0, length) exactly."""
    if not spans:
        raise ValueError("no sentences")
    cursor = 0
    for index, span in enumerate(spans):
        if len(span) != 2:
            raise ValueError(f"sentence {index} span {span} is not [start, end]")
        start, end = span
        if start != cursor or end <= start:
            raise ValueError(f"sentence {index} span {span} does not continue at {cursor}")
        cursor = end
    if cursor != length:
        raise ValueError(f"sentences end at {cursor} but the reasoning has {length} characters")


def check_blocks_cover(blocks: list[list[int]], n_sentences: int) -> None:
    """Blocks must be contiguous inclusive sentence ranges covering every sentence once, in order."""
    if not blocks:
        raise ValueError("no blocks")
    cursor = 0
    for index, block in enumerate(blocks):
        if len(block) != 2:
            raise ValueError(f"block {index} {block} is not [first, last]")
        first, last = block
        if first != cursor or last < first:
            raise ValueError(f"block {index} {block} does not continue at sentence {cursor}")
        cursor = last + 1
    if cursor != n_sentences:
        raise ValueError(f"blocks end at sentence {cursor - 1} but there are {n_sentences} sentences")


# --------------------------------------------------------------------------- annotation


class JudgeRound(Record):
    """One judge verdict on one memento, and what it cost."""

    score: float
    feedback: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


class MementoReview(Record):
    """The judge rounds of one memento, oldest first; the memento was rewritten after each failing round."""

    rounds: list[JudgeRound]
    kept: int = Field(
        default=-1,
        description="Index of the round whose memento was kept (the best-scoring version); -1: the last",
    )
    judge: str = Field(
        default="per-memento",
        description="per-memento: each verdict from a call about this memento alone; per-trace: from a call "
        "grading every memento of the trace",
    )

    @property
    def final_score(self) -> float | None:
        """The score of the memento that was kept."""
        return self.rounds[self.kept].score if self.rounds else None


class Usage(Record):
    """LLM requests, tokens and cost; `+` adds exactly, `sum_usage` gives a total fit to store or report."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Of `prompt_tokens`, those the provider served from its prefix cache (billed at the cached rate)."""
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            requests=self.requests + other.requests,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            cached_prompt_tokens=self.cached_prompt_tokens + other.cached_prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
        )

    def rounded(self) -> Usage:
        """The cost rounded to 8 decimals (no float noise): once, where a total is stored or reported."""
        return self.model_copy(update={"cost_usd": round(self.cost_usd, 8)})


def sum_usage(usages: Iterable[Usage]) -> Usage:
    """The total of these usages, added exactly and rounded once."""
    return sum(usages, Usage()).rounded()


class AnnotatedTrace(SegmentedTrace):
    """A segmented trace with one memento per block and the provenance of the mementos."""

    mementos: list[str]
    memento_tokens: list[int]
    reviews: list[MementoReview] = Field(description="One entry per memento; empty when no judge ran")
    annotator_model: str
    prompt_version: str
    usage: Usage

    @model_validator(mode="after")
    def _check_mementos(self) -> Self:
        n = len(self.blocks)
        if len(self.mementos) != n or len(self.memento_tokens) != n:
            raise ValueError(f"{len(self.mementos)} mementos for {n} blocks")
        for index, memento in enumerate(self.mementos):
            if not memento.strip():
                raise ValueError(f"memento {index} is empty")
        if self.reviews and len(self.reviews) != n:
            raise ValueError(f"{len(self.reviews)} reviews for {n} mementos")
        return self

    def response(self) -> str:
        return render_response(self.block_texts(), self.mementos, self.answer)

    def to_default_row(self) -> DefaultRow:
        return DefaultRow(**self._public_fields())

    def to_full_row(self) -> FullRow:
        return FullRow(
            **self._public_fields(),
            sentences=self.sentences(),
            blocks=self.blocks,
            block_summaries=self.mementos,
        )

    def _public_fields(self) -> dict[str, Any]:
        return {
            "problem": self.problem,
            "response": self.response(),
            "domain": self.domain,
            "source": self.source,
            "difficulty": self.difficulty,
        }


# --------------------------------------------------------------------------- published rows


class DefaultRow(Record):
    """A row of the public `default` config."""

    problem: str
    response: str
    domain: str
    source: str
    difficulty: int | None


class FullRow(DefaultRow):
    """A row of the public `full` config."""

    sentences: list[str]
    blocks: list[list[int]]
    block_summaries: list[str]

    @model_validator(mode="after")
    def _check_full(self) -> Self:
        check_blocks_cover(self.blocks, len(self.sentences))
        parsed = parse_response(self.response)
        expected = ["".join(self.sentences[first : last + 1]) for first, last in self.blocks]
        if parsed.blocks != expected:
            raise ValueError("response blocks differ from the sentences grouped by blocks")
        if parsed.mementos != self.block_summaries:
            raise ValueError("response mementos differ from block_summaries")
        return self


PUBLIC_CONFIGS: dict[str, type[DefaultRow]] = {"default": DefaultRow, "full": FullRow}


class QuarantineRecord(Record):
    """A trace a stage could not process, with why; `record` is the input row as JSON text."""

    id: str
    stage: str
    reason: str
    detail: str
    record: str


# --------------------------------------------------------------------------- arrow types

_SCALARS: dict[type, pa.DataType] = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """Arrow type of a field annotation and whether it is nullable."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"unsupported union {annotation}")
        return _arrow_type(members[0])[0], True
    if origin is list:
        (item,) = get_args(annotation)
        item_type, _ = _arrow_type(item)
        return pa.list_(item_type), False
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return pa.struct(list(arrow_schema(annotation))), False
    if annotation in _SCALARS:
        return _SCALARS[annotation], False
    raise TypeError(f"no Arrow type for {annotation}")


@cache
def arrow_schema(model: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a record type, field order as declared."""
    fields = []
    for name, info in model.model_fields.items():
        arrow_type, nullable = _arrow_type(info.annotation)
        fields.append(pa.field(name, arrow_type, nullable=nullable))
    return pa.schema(fields)


def features(model: type[BaseModel]) -> Any:
    """`datasets.Features` of a record type (imported lazily: `datasets` is slow to import)."""
    from datasets import Features

    return Features.from_arrow_schema(arrow_schema(model))
