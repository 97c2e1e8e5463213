"""Simulate the KV-cache footprint of a memento response from token lengths alone.

A MEMENTO model drops a block's content from its KV cache once the block's memento is closed by
`<|summary_end|>`. Given how many tokens each piece of a trace takes, this module computes the peak
number of tokens held in the KV cache while the trace is decoded, with and without that eviction.

The accounting is the one the HF backend (`openmementos.infer.hf`) really performs, token by token:

* every fed token adds one KV entry (prompt tokens included);
* right after `<|summary_end|>` of memento *i* has been fed (its KV computed while block *i* was still
  visible), the content tokens of block *i* leave the cache; with `mask_delimiters` its
  `<|block_start|>` and `<|block_end|>` leave too;
* the peak is therefore reached just before an eviction or at the very end.

The benchmark `benchmarks/bench_kv_eviction.py` checks that this simulation and the HF backend give
the same numbers on real token sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ResponseLayout:
    """Token cost of the fixed pieces around blocks and mementos in the canonical response layout.

    Defaults: each delimiter is one special token and each separating newline one token, which holds
    for every tokenizer we know of. `after_memento` is the newline between `<|summary_end|>` and the
    next `<|block_start|>`; what follows the last memento belongs to the answer.
    """

    block_start: int = 1
    block_end: int = 1
    between: int = 1
    summary_start: int = 1
    summary_end: int = 1
    after_memento: int = 1


@dataclass(frozen=True)
class KVFootprint:
    """Peak KV-cache tokens of one trace with and without block eviction.

    `blocks_evicted` counts the blocks whose eviction removed at least one entry (an empty block
    frees nothing unless its delimiters are masked too).
    """

    peak_with_eviction: int
    peak_without_eviction: int
    blocks_evicted: int

    @property
    def ratio(self) -> float:
        """How many times smaller the peak is with eviction (the paper reports about 2.5x)."""
        return self.peak_without_eviction / self.peak_with_eviction if self.peak_with_eviction else 1.0


def simulate_kv(
    prompt_tokens: int,
    block_tokens: Sequence[int],
    memento_tokens: Sequence[int],
    answer_tokens: int = 0,
    *,
    layout: ResponseLayout = ResponseLayout(),
    mask_delimiters: bool = False,
) -> KVFootprint:
    """Peak KV tokens while decoding one memento trace, with and without eviction.

    `prompt_tokens` counts everything before the first `<|block_start|>` (chat prompt and `<think>`),
    `block_tokens[i]` / `memento_tokens[i]` the text between the delimiters of block / memento *i*, and
    `answer_tokens` everything after the last `<|summary_end|>` (`</think>`, the answer, end of turn).
    """
    if len(block_tokens) != len(memento_tokens):
        raise ValueError(f"{len(block_tokens)} blocks but {len(memento_tokens)} mementos")
    if min((prompt_tokens, answer_tokens, *block_tokens, *memento_tokens), default=0) < 0:
        raise ValueError("token counts cannot be negative")
    evicted_delimiters = layout.block_start + layout.block_end if mask_delimiters else 0
    held = peak = prompt_tokens
    evictions = 0
    total = prompt_tokens
    for index, (block, memento) in enumerate(zip(block_tokens, memento_tokens, strict=True)):
        added = (
            layout.block_start
            + block
            + layout.block_end
            + layout.between
            + layout.summary_start
            + memento
            + layout.summary_end
        )
        glue = layout.after_memento if index < len(block_tokens) - 1 else 0
        held += added
        total += added + glue
        peak = max(peak, held)
        held += glue - block - evicted_delimiters
        evictions += block + evicted_delimiters > 0
    held += answer_tokens
    total += answer_tokens
    return KVFootprint(
        peak_with_eviction=max(peak, held),
        peak_without_eviction=total,
        blocks_evicted=evictions,
    )
