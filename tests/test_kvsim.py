"""kvsim's length-only simulation against the token-level memento mask it must agree with."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from openmementos.kvsim import KVFootprint, ResponseLayout, simulate_kv
from openmementos.train.attention import NEVER, DelimiterIds, memento_attention_mask, visible_until

DELIMITERS = DelimiterIds(block_start=1, block_end=2, summary_start=3, summary_end=4)
TEXT, NEWLINE = 7, 8


def token_sequence(prompt: int, blocks: list[int], mementos: list[int], answer: int) -> list[int]:
    """Ids laid out like a canonical response: one token per newline and per delimiter."""
    ids = [TEXT] * prompt
    for index, (block, memento) in enumerate(zip(blocks, mementos, strict=True)):
        ids += [1, *[TEXT] * block, 2, NEWLINE, 3, *[TEXT] * memento, 4]
        if index < len(blocks) - 1:
            ids.append(NEWLINE)
    return ids + [TEXT] * answer


def test_hand_computed_example():
    # prompt 10; block 1: 1+100+1+1+1+20+1 = 125 -> held 135 (peak), evict 100, glue 1 -> 36;
    # block 2: +1+50+1+1+1+10+1 = 65 -> 101, evict 50 -> 51; answer 5 -> 56.
    footprint = simulate_kv(10, [100, 50], [20, 10], 5)
    assert footprint == KVFootprint(
        peak_with_eviction=135, peak_without_eviction=10 + 125 + 1 + 65 + 5, blocks_evicted=2
    )
    assert footprint.ratio == pytest.approx(206 / 135)


def test_long_answer_sets_the_peak_and_no_blocks_means_no_saving():
    assert simulate_kv(10, [5], [5], 1000).peak_with_eviction == 10 + 1 + 5 + 1 + 1 + 1 + 5 + 1 + 1000 - 5
    empty = simulate_kv(7, [], [], 3)
    assert (empty.peak_with_eviction, empty.peak_without_eviction, empty.ratio) == (10, 10, 1.0)


def test_rejects_mismatched_or_negative_lengths():
    with pytest.raises(ValueError, match="2 blocks but 1 mementos"):
        simulate_kv(1, [3, 4], [1])
    with pytest.raises(ValueError, match="negative"):
        simulate_kv(1, [-3], [1])


@settings(max_examples=60, deadline=None)
@given(
    prompt=st.integers(1, 12),
    pieces=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 6)), max_size=5),
    answer=st.integers(0, 10),
    mask_delimiters=st.booleans(),
)
def test_simulation_matches_the_stage_two_mask(prompt, pieces, answer, mask_delimiters):
    """Peak held KV = the widest row of the stage-2 mask (what the evicting decoder holds)."""
    blocks = [b for b, _ in pieces]
    mementos = [m for _, m in pieces]
    ids = torch.tensor(token_sequence(prompt, blocks, mementos, answer))
    mask = memento_attention_mask(ids, DELIMITERS, mask_delimiters=mask_delimiters)[0, 0]
    footprint = simulate_kv(prompt, blocks, mementos, answer, mask_delimiters=mask_delimiters)
    assert footprint.peak_with_eviction == int(mask.sum(-1).max())
    assert footprint.peak_without_eviction == len(ids)
    until = visible_until(ids, DELIMITERS, mask_delimiters=mask_delimiters)
    assert footprint.blocks_evicted == until[until != NEVER].unique().numel()


def test_layout_costs_are_configurable():
    wide = ResponseLayout(block_start=2, block_end=2, between=3, summary_start=2, summary_end=2, after_memento=3)
    assert simulate_kv(0, [10, 10], [1, 1], layout=wide).peak_without_eviction == 2 * (2 + 10 + 2 + 3 + 2 + 1 + 2) + 3
