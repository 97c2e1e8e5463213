"""Annotated traces built directly for tests of validate, stats and publish (no other stage needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from openmementos.runtime.manifest import Manifest
from openmementos.schema import AnnotatedTrace, JudgeRound, MementoReview, Usage
from openmementos.tokens import count_tokens
from support.trace_builders import build_segmented, sentence, write_stage_folder

DOMAINS = ("math", "code", "science")
WORDS = 18
"""Filler words per sentence."""


def make_trace(
    number: int,
    *,
    domain: str | None = None,
    n_blocks: int | None = None,
    sentences_per_block: int = 4,
    judged: bool = False,
) -> AnnotatedTrace:
    """A well-formed annotated trace; every field is consistent, so it passes validation."""
    n_blocks = n_blocks or 2 + number % 3
    blocks_sentences = [[sentence(number, b, i, WORDS) for i in range(sentences_per_block)] for b in range(n_blocks)]
    mementos = [f"x_{b} = {number + b}; method: direct computation of step {b}." for b in range(n_blocks)]
    reviews = [MementoReview(rounds=[JudgeRound(score=9.0, feedback="fine")]) for _ in mementos] if judged else []
    return build_segmented(
        AnnotatedTrace,
        blocks_sentences,
        boundary_score=1.0,
        id=f"trace-{number:04d}",
        problem=f"Problem {number}: find x for case {number}.",
        answer=f"The answer is {number}.",
        domain=domain or DOMAINS[number % len(DOMAINS)],
        source=f"source-{number % 2}",
        difficulty=5,
        mementos=mementos,
        memento_tokens=count_tokens(mementos),
        reviews=reviews,
        annotator_model="extractive",
        prompt_version="test-prompt",
        usage=Usage(requests=1, prompt_tokens=100, completion_tokens=20, cost_usd=0.001),
    )


Row = BaseModel | dict[str, Any]


def write_stage(out_dir: Path, rows: Sequence[Row], shards: int = 2, stage: str = "annotate") -> Manifest:
    """Write rows round-robin into `shards` shards of a finished stage folder of AnnotatedTrace rows."""
    return write_shards(out_dir, [list(rows[i::shards]) for i in range(shards)], stage)


def write_shards(out_dir: Path, shards: Sequence[Sequence[Row]], stage: str = "annotate") -> Manifest:
    """Write each list of rows (models, or raw dicts to plant defects) as one shard of a finished stage folder."""
    return write_stage_folder(out_dir, stage, AnnotatedTrace, shards)
