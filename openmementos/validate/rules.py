"""The validation rules: every invariant of an annotated trace and every memento rule, for one row.

Pure functions of one row (`check_row`): a row breaks zero or more rules, each reported once with the
indices of what breaks it. The memento rules are `openmementos.mementos`' (the ones annotate applies).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field, ValidationError

from openmementos.format import FormatError, find_delimiter, find_reserved, parse_response
from openmementos.mementos import MEMENTO_RULES, MementoRules, memento_problems
from openmementos.schema import AnnotatedTrace, check_blocks_cover, check_spans_tile

RULES: dict[str, str] = {
    "schema": "the row has exactly the AnnotatedTrace fields, with their types",
    "spans_lossless": "sentence spans tile the reasoning exactly (blocks join back to it byte for byte)",
    "blocks_contiguous": "blocks are contiguous sentence ranges covering every sentence once, in order",
    "counts_consistent": "one token count per sentence and block, one score per boundary, one memento per block",
    "duplicate_id": "each trace id appears once (the first occurrence, in shard order, is kept)",
    "source_reserved": "problem, reasoning and answer hold no delimiter string (or think tag in the reasoning)",
    "answer_empty": "the final answer after </think> is not empty",
    **MEMENTO_RULES,
    "judge_score": "every judged memento, as kept, scored >= --min-judge-score",
    "response_roundtrip": "the rendered response parses back to the same blocks, mementos and answer",
}
"""Rule code -> what it requires. Codes are stable: they appear in quarantine files and reports."""

_SHOWN_PER_RULE = 3  # indices named in one failure message before "and N more"


class ValidationRules(MementoRules):
    """The configurable bounds of the rules (recorded in the stage manifest)."""

    min_judge_score: float = Field(
        8.0, ge=0, le=10, description="Judged mementos need a score of at least this (0-10) for the version kept."
    )


@dataclass(frozen=True)
class Failure:
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.rule}: {self.message}"


# --------------------------------------------------------------------------- checks of one row


def check_row(row: dict[str, Any], rules: ValidationRules) -> tuple[AnnotatedTrace | None, list[Failure]]:
    """Every rule broken by one annotated row, and the row as a trace when it has a sound structure."""
    try:
        failures = [*_structure_failures(row), *_source_failures(row), *_memento_failures(row, rules)]
    except (KeyError, TypeError, AttributeError):  # fields missing or mistyped: pydantic says which below
        failures = []
    try:
        trace = AnnotatedTrace.model_validate(row)
    except ValidationError as error:
        # Errors of the model-level validators (no field location) repeat the structural rules above.
        unexplained = [e for e in error.errors() if e["loc"] or not failures]
        if unexplained:
            failures.append(Failure("schema", _pydantic_summary(unexplained)))
        return None, failures
    if problem := roundtrip_problem(trace):
        failures.append(Failure("response_roundtrip", problem))
    return trace, failures


def _structure_failures(row: dict[str, Any]) -> list[Failure]:
    failures = []
    spans, blocks = row["sentence_spans"], row["blocks"]
    for rule, check in (
        ("spans_lossless", lambda: check_spans_tile(spans, len(row["reasoning"]))),
        ("blocks_contiguous", lambda: check_blocks_cover(blocks, len(spans))),
    ):
        try:
            check()
        except ValueError as error:
            failures.append(Failure(rule, str(error)))
    n_sentences, n_blocks = len(spans), len(blocks)
    expected = {
        "sentence_tokens": n_sentences,
        "boundary_scores": max(n_sentences - 1, 0),
        "block_tokens": n_blocks,
        "mementos": n_blocks,
        "memento_tokens": n_blocks,
    }
    if row["reviews"]:
        expected["reviews"] = n_blocks
    wrong = [f"{len(row[name])} {name} (need {need})" for name, need in expected.items() if len(row[name]) != need]
    if wrong:
        failures.append(
            Failure("counts_consistent", f"{n_sentences} sentences, {n_blocks} blocks: " + ", ".join(wrong))
        )
    return failures


def _source_failures(row: dict[str, Any]) -> list[Failure]:
    failures = []
    found = [
        f"{name} contains {reserved!r}"
        for name, reserved in (
            ("problem", find_delimiter(row["problem"])),
            ("reasoning", find_reserved(row["reasoning"])),
            ("answer", find_delimiter(row["answer"])),
        )
        if reserved
    ]
    if found:
        failures.append(Failure("source_reserved", "; ".join(found)))
    if not row["answer"].strip():
        failures.append(Failure("answer_empty", "no final answer after </think>"))
    return failures


def _memento_failures(row: dict[str, Any], rules: ValidationRules) -> list[Failure]:
    """The memento rules, each reported once per trace with the indices of the mementos that break it."""
    mementos: list[str] = row["mementos"]
    bad: dict[str, list[str]] = {}

    def note(rule: str, index: int, what: str) -> None:
        bad.setdefault(rule, []).append(f"memento {index}{what}")

    block_tokens, memento_tokens = row["block_tokens"], row["memento_tokens"]
    counted = len(mementos) == len(memento_tokens) == len(block_tokens)  # else counts_consistent says so
    for index, text in enumerate(mementos):
        sizes = (memento_tokens[index], block_tokens[index]) if counted else (None, None)
        for rule, what in memento_problems(text, *sizes, rules):
            note(rule, index, f" {what}")
    for index, review in enumerate(row["reviews"]):
        rounds, kept = review["rounds"], review.get("kept", -1)  # -1: the default, the last round
        if not rounds:
            continue
        if not -len(rounds) <= kept < len(rounds):
            note("judge_score", index, f" keeps round {kept}, but it was judged in {len(rounds)} round(s)")
            continue
        score = rounds[kept]["score"]  # the version that was kept (`MementoReview.final_score`)
        if score < rules.min_judge_score:
            note("judge_score", index, f" scored {score:g} after {len(rounds)} judge round(s)")
    bounds = {"judge_score": f" (need >= {rules.min_judge_score:g})"}
    return [Failure(rule, _enumerate(items) + bounds.get(rule, "")) for rule, items in bad.items()]


def roundtrip_problem(trace: AnnotatedTrace) -> str | None:
    """Why the trace's `response` does not parse back to its blocks, mementos and answer (None if it does)."""
    try:
        parsed = parse_response(trace.response())
    except (FormatError, ValueError) as error:
        return f"{type(error).__name__}: {error}"
    for name, got, want in (
        ("blocks", parsed.blocks, trace.block_texts()),
        ("mementos", parsed.mementos, trace.mementos),
        ("answer", [parsed.answer], [trace.answer]),
    ):
        if got != want:
            index = next(
                (i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want))
            )
            return f"parsed {name} differ from the trace's at item {index}"
    return None


def _enumerate(items: list[str]) -> str:
    shown = "; ".join(items[:_SHOWN_PER_RULE])
    return shown if len(items) <= _SHOWN_PER_RULE else f"{shown}; and {len(items) - _SHOWN_PER_RULE} more"


def _pydantic_summary(errors: list[Any]) -> str:
    return _enumerate([f"{'.'.join(map(str, e['loc'])) or 'row'}: {e['msg']}" for e in errors])
