"""Validation: every invariant of an annotated trace and every memento rule, checked before publishing.

`validate` is a stage like the others. It reads annotated shards and writes the traces that pass every
rule to its output folder (same shard names) and the others to `quarantine/`, each with *every* rule it
broke: the quarantine `reason` lists the rule codes (comma-separated) and `detail` has one line per rule.
`publish` only reads a finished `validate` folder, so nothing unvalidated can reach a published dataset.

The checks are pure functions of one row (`check_row`); duplicates are found by a first pass over the
`id` column of every input shard, so the first occurrence of an id (in shard order) is kept.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from openmementos.annotate.parsing import is_placeholder
from openmementos.format import FormatError, find_delimiter, find_reserved, parse_response
from openmementos.schema import AnnotatedTrace, check_blocks_cover, check_spans_tile
from openmementos.shards import (
    Manifest,
    Quarantined,
    ShardSelection,
    ShardTask,
    Stage,
    StageError,
    input_shards,
    iter_rows,
    read_quarantine,
)

STAGE = "validate"

RULES: dict[str, str] = {
    "schema": "the row has exactly the AnnotatedTrace fields, with their types",
    "spans_lossless": "sentence spans tile the reasoning exactly (blocks join back to it byte for byte)",
    "blocks_contiguous": "blocks are contiguous sentence ranges covering every sentence once, in order",
    "counts_consistent": "one token count per sentence and block, one score per boundary, one memento per block",
    "duplicate_id": "each trace id appears once (the first occurrence, in shard order, is kept)",
    "source_reserved": "problem, reasoning and answer hold no delimiter string (or think tag in the reasoning)",
    "answer_empty": "the final answer after </think> is not empty",
    "memento_empty": "no memento is empty or whitespace",
    "memento_reserved": "no memento holds a delimiter string or a think tag",
    "memento_placeholder": "no memento is placeholder text (N/A, TODO, '[summary unavailable]', ...)",
    "memento_ascii": "mementos are plain ASCII (checked with --require-ascii)",
    "memento_ratio": "memento tokens / block tokens is within [--min-ratio, --max-ratio] for every block",
    "judge_score": "every judged memento, as kept, scored >= --min-judge-score",
    "response_roundtrip": "the rendered response parses back to the same blocks, mementos and answer",
}
"""Rule code -> what it requires. Codes are stable: they appear in quarantine files and reports."""

_SHOWN_PER_RULE = 3  # indices named in one failure message before "and N more"


class ValidationRules(BaseModel):
    """The configurable bounds of the memento rules (recorded in the stage manifest)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_ratio: float = Field(0.02, ge=0, description="Smallest allowed memento/block token ratio.")
    max_ratio: float = Field(1.0, gt=0, description="Largest allowed memento/block token ratio.")
    min_judge_score: float = Field(8.0, ge=0, le=10, description="Judged mementos need at least this score.")
    require_ascii: bool = Field(False, description="Mementos must be plain ASCII.")

    @model_validator(mode="after")
    def _check_bounds(self) -> ValidationRules:
        if self.min_ratio > self.max_ratio:
            raise ValueError(f"min_ratio {self.min_ratio} is above max_ratio {self.max_ratio}")
        return self


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

    for index, text in enumerate(mementos):
        if not text.strip():
            note("memento_empty", index, " is empty")
            continue
        if reserved := find_reserved(text):
            note("memento_reserved", index, f" contains {reserved!r}")
        if is_placeholder(text):
            note("memento_placeholder", index, f" is placeholder text {text.strip()[:40]!r}")
        if rules.require_ascii and not text.isascii():
            char = next(c for c in text if not c.isascii())
            note("memento_ascii", index, f" has {char!r} (U+{ord(char):04X})")
    block_tokens, memento_tokens = row["block_tokens"], row["memento_tokens"]
    if len(block_tokens) == len(memento_tokens):
        for index, (block, memento) in enumerate(zip(block_tokens, memento_tokens, strict=True)):
            ratio = memento / block if block else float("inf")
            if not rules.min_ratio <= ratio <= rules.max_ratio:
                note("memento_ratio", index, f": {memento} tokens for a {block}-token block ({ratio:.3f})")
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
    bounds = {
        "memento_ratio": f" (allowed {rules.min_ratio:g}-{rules.max_ratio:g})",
        "judge_score": f" (need >= {rules.min_judge_score:g})",
    }
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


# --------------------------------------------------------------------------- the stage


@dataclass(frozen=True)
class ShardInput:
    """One input shard and the row numbers in it whose id already appeared earlier."""

    path: Path
    duplicate_rows: frozenset[int] = field(default_factory=frozenset)


def validate_shard(task: ShardTask[ShardInput], rules: ValidationRules) -> Iterator[AnnotatedTrace | Quarantined]:
    """Pass each row of a shard through `check_row`: the trace, or the row quarantined with every failure."""
    for number, row in enumerate(iter_rows(task.source.path)):
        trace, failures = check_row(row, rules)
        if number in task.source.duplicate_rows:
            failures.insert(0, Failure("duplicate_id", f"id {row.get('id')!r} already appeared in an earlier row"))
        if trace is not None and not failures:
            yield trace
        else:
            yield Quarantined(
                id=str(row.get("id", f"{task.name}#{number}")),
                reason=",".join(f.rule for f in failures),
                detail="\n".join(map(str, failures)),
                record=row,
            )


def find_duplicates(paths: Sequence[Path]) -> dict[Path, frozenset[int]]:
    """Row numbers, per shard, whose id appeared in an earlier row (shard order, then row order)."""
    seen: set[str] = set()
    duplicates: dict[Path, frozenset[int]] = {}
    for path in paths:
        rows = set()
        for number, row in enumerate(iter_rows(path, columns=["id"], batch_size=8192)):
            if row["id"] in seen:
                rows.add(number)
            seen.add(row["id"])
        duplicates[path] = frozenset(rows)
    return duplicates


def run_validate(in_dir: Path, out_dir: Path, rules: ValidationRules | None = None, workers: int = 1) -> Manifest:
    """Validate every trace of a finished annotate folder into `out_dir` (resumable per shard)."""
    rules = rules or ValidationRules()
    if out_dir.resolve() == in_dir.resolve():
        raise StageError(f"write the validated traces to a new folder, not into {in_dir} itself")
    names, paths = input_shards(in_dir, ShardSelection())
    duplicates = find_duplicates(paths)
    tasks = [
        ShardTask(index, name, ShardInput(path, duplicates[path]))
        for index, (name, path) in enumerate(zip(names, paths, strict=True))
    ]
    stage = Stage(
        name=STAGE,
        out_dir=out_dir,
        model=AnnotatedTrace,
        process=partial(validate_shard, rules=rules),
        options={"in_dir": str(in_dir.resolve()), **rules.model_dump()},
        workers=workers,
        description="validate",
    )
    return stage.run(tasks)


# --------------------------------------------------------------------------- the report


@dataclass(frozen=True)
class RuleResult:
    rule: str
    description: str
    failures: int
    examples: list[str]


@dataclass(frozen=True)
class ValidationReport:
    """What a validate folder holds: how many traces passed, and each rule's failures."""

    traces: int
    passed: int
    quarantined: int
    rules: list[RuleResult]
    options: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.quarantined == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "traces": self.traces,
            "passed": self.passed,
            "quarantined": self.quarantined,
            "rules": [vars(r) for r in self.rules],
            "options": self.options,
        }


def build_report(manifest: Manifest, out_dir: Path, examples: int = 3) -> ValidationReport:
    """Count each rule's failing traces from the quarantine files (so resumed shards count too)."""
    counts: Counter[str] = Counter()
    shown: dict[str, list[str]] = {}
    for record in read_quarantine(out_dir):
        if record.stage != STAGE:
            continue
        messages = dict(line.split(": ", 1) for line in record.detail.splitlines() if ": " in line)
        for rule in record.reason.split(","):
            counts[rule] += 1
            if len(shown.setdefault(rule, [])) < examples:
                shown[rule].append(f"{record.id}: {messages.get(rule, '')}")
    results = [RuleResult(rule, description, counts[rule], shown.get(rule, [])) for rule, description in RULES.items()]
    return ValidationReport(
        traces=manifest.rows + manifest.quarantined,
        passed=manifest.rows,
        quarantined=manifest.quarantined,
        rules=results,
        options=manifest.options,
    )
