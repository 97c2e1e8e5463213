"""Annotated traces built directly for tests of validate, stats and publish (no other stage needed)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from openmementos.schema import AnnotatedTrace, JudgeRound, MementoReview, Usage
from openmementos.shards import Manifest, ShardTask, Stage
from openmementos.tokens import count_tokens

DOMAINS = ("math", "code", "science")


def sentence(trace: int, block: int, index: int) -> str:
    words = " ".join(f"w{(trace * 31 + block * 7 + index * 3 + k) % 97}" for k in range(18))
    return f"Step {block}.{index}: we compute {words} so x_{block} = {trace + block + index}. "


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
    blocks_sentences = [[sentence(number, b, i) for i in range(sentences_per_block)] for b in range(n_blocks)]
    mementos = [f"x_{b} = {number + b}; method: direct computation of step {b}." for b in range(n_blocks)]
    reviews = [MementoReview(rounds=[JudgeRound(score=9.0, feedback="fine")]) for _ in mementos] if judged else []
    return build_trace(
        id=f"trace-{number:04d}",
        problem=f"Problem {number}: find x for case {number}.",
        blocks_sentences=blocks_sentences,
        mementos=mementos,
        answer=f"The answer is {number}.",
        domain=domain or DOMAINS[number % len(DOMAINS)],
        source=f"source-{number % 2}",
        reviews=reviews,
    )


def build_trace(
    *,
    id: str,
    problem: str,
    blocks_sentences: Sequence[Sequence[str]],
    mementos: Sequence[str],
    answer: str,
    domain: str = "math",
    source: str = "synthetic",
    reviews: Sequence[MementoReview] = (),
    annotator_model: str = "extractive",
) -> AnnotatedTrace:
    sentences = [s for block in blocks_sentences for s in block]
    ends = list(accumulate(len(s) for s in sentences))
    spans = [[end - len(s), end] for s, end in zip(sentences, ends, strict=True)]
    last = list(accumulate(len(block) for block in blocks_sentences))
    blocks = [[end - len(block), end - 1] for block, end in zip(blocks_sentences, last, strict=True)]
    block_texts = ["".join(block) for block in blocks_sentences]
    return AnnotatedTrace(
        id=id,
        problem=problem,
        reasoning="".join(sentences),
        answer=answer,
        domain=domain,
        source=source,
        difficulty=5,
        sentence_spans=spans,
        sentence_tokens=count_tokens(sentences),
        boundary_scores=[1.0] * (len(sentences) - 1),
        blocks=blocks,
        block_tokens=count_tokens(block_texts),
        scorer="heuristic",
        tokenizer="cl100k_base",
        mementos=list(mementos),
        memento_tokens=count_tokens(list(mementos)),
        reviews=list(reviews),
        annotator_model=annotator_model,
        prompt_version="test-prompt",
        usage=Usage(requests=1, prompt_tokens=100, completion_tokens=20, cost_usd=0.001),
    )


def _yield_rows(task: ShardTask) -> Iterable[Any]:
    yield from task.source


Row = BaseModel | dict[str, Any]


def write_stage(out_dir: Path, rows: Sequence[Row], shards: int = 2, stage: str = "annotate") -> Manifest:
    """Write rows round-robin into `shards` shards of a finished stage folder of AnnotatedTrace rows."""
    return write_shards(out_dir, [list(rows[i::shards]) for i in range(shards)], stage)


def write_shards(out_dir: Path, shards: Sequence[Sequence[Row]], stage: str = "annotate") -> Manifest:
    """Write each list of rows (models, or raw dicts to plant defects) as one shard of a finished stage folder."""
    tasks = [ShardTask(i, f"part-{i:05d}", list(rows)) for i, rows in enumerate(shards)]
    return Stage(stage, out_dir, AnnotatedTrace, _yield_rows).run(tasks)
