"""Test data builders shared by the support modules: traces from blocks of sentences, finished stage folders."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import accumulate
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from openmementos.runtime.manifest import Manifest, shard_name
from openmementos.runtime.stage import ShardTask, Stage
from openmementos.schema import SegmentedTrace
from openmementos.tokens import count_tokens

T = TypeVar("T", bound=SegmentedTrace)


def sentence(trace: int, block: int, index: int, words: int) -> str:
    """Sentence `index` of block `block` of trace `trace`: `words` filler words, distinct per position."""
    filler = " ".join(f"w{(trace * 31 + block * 7 + index * 3 + k) % 97}" for k in range(words))
    return f"Step {block}.{index}: we compute {filler}, so x_{block} = {trace + block + index}. "


def build_segmented(
    model: type[T], blocks_sentences: Sequence[Sequence[str]], *, boundary_score: float, **fields: Any
) -> T:
    """A `model` trace whose reasoning is these sentences, one block per inner list; `fields` gives the rest.

    Spans, blocks and token counts (cl100k_base) are derived, so the segmentation is consistent;
    every boundary gets `boundary_score`.
    """
    sentences = [text for block in blocks_sentences for text in block]
    ends = list(accumulate(len(text) for text in sentences))
    last = list(accumulate(len(block) for block in blocks_sentences))
    return model(
        reasoning="".join(sentences),
        sentence_spans=[[end - len(text), end] for text, end in zip(sentences, ends, strict=True)],
        sentence_tokens=count_tokens(sentences),
        boundary_scores=[boundary_score] * (len(sentences) - 1),
        blocks=[[end - len(block), end - 1] for block, end in zip(blocks_sentences, last, strict=True)],
        block_tokens=count_tokens(["".join(block) for block in blocks_sentences]),
        scorer="heuristic",
        tokenizer="cl100k_base",
        **fields,
    )


def write_stage_folder(
    out_dir: Path, stage: str, model: type[BaseModel], shards: Sequence[Sequence[BaseModel | dict[str, Any]]]
) -> Manifest:
    """A finished `stage` folder of `model` rows, one shard per list (models, or raw dicts to plant defects)."""
    tasks = [ShardTask(index, shard_name(index), list(rows)) for index, rows in enumerate(shards)]
    return Stage(stage, out_dir, model, _emit).run(tasks)


def _emit(task: ShardTask[list[Any]]) -> Iterable[Any]:
    """The stage process that writes its shard's rows unchanged."""
    return task.source
