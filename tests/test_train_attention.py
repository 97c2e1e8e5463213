"""The memento attention mask (the dense reference) on hand-made token sequences, with and without a window."""

import torch

from openmementos.train.attention import (
    HIDDEN,
    NEVER,
    DelimiterIds,
    dense_mask,
    layer_windows,
    memento_attention_mask,
    model_mask,
    per_layer_windows,
    to_model_mask,
    visible_until,
)

D = DelimiterIds(block_start=1, block_end=2, summary_start=3, summary_end=4)
BS, BE, SS, SE, TXT, NL = 1, 2, 3, 4, 9, 8

# positions:   0    1    2   3    4    5   6   7   8    9   10  11   12  13  14  15   16  17   18
SEQUENCE = [TXT, TXT, BS, TXT, TXT, BE, NL, SS, TXT, SE, NL, BS, TXT, BE, NL, SS, TXT, SE, TXT]


def causal(n: int) -> torch.Tensor:
    return torch.ones(n, n, dtype=torch.bool).tril()


def test_without_a_completed_block_the_mask_is_causal():
    open_memento = torch.tensor(SEQUENCE[:9])  # block closed, memento still being written
    assert torch.equal(memento_attention_mask(open_memento, D)[0, 0], causal(9))
    assert torch.equal(memento_attention_mask(open_memento, D, mask_delimiters=True)[0, 0], causal(9))
    # A <|summary_end|> inside the prompt is plain text.
    full = torch.tensor(SEQUENCE)
    assert torch.equal(memento_attention_mask(full, D, response_start=len(SEQUENCE))[0, 0], causal(19))


def test_block_content_is_hidden_after_its_summary_end_only():
    until = visible_until(torch.tensor(SEQUENCE), D)
    expected = [NEVER] * len(SEQUENCE)
    expected[3] = expected[4] = 9  # block 1 content, evicted by the <|summary_end|> at 9
    expected[12] = 17  # block 2 content
    assert until.tolist() == expected

    mask = memento_attention_mask(torch.tensor(SEQUENCE), D)[0, 0]
    assert mask[9, 3] and mask[9, 4]  # the memento's closing token still sees its block
    assert not mask[10, 3] and not mask[18, 4]  # nothing after it does
    assert mask[18, 2] and mask[18, 5] and mask[18, 8]  # delimiters and memento stay visible
    assert not mask[18, 12] and mask[17, 12]


def test_mask_delimiters_also_hides_block_start_and_end():
    until = visible_until(torch.tensor(SEQUENCE), D, mask_delimiters=True)
    assert [p for p, u in enumerate(until.tolist()) if u == 9] == [2, 3, 4, 5]
    assert [p for p, u in enumerate(until.tolist()) if u == 17] == [11, 12, 13]


def test_batched_rows_with_own_response_start_and_padding():
    pad = 0
    first = torch.tensor(SEQUENCE)
    second = torch.tensor([TXT, TXT, TXT, BS, TXT, BE, SS, TXT, SE, TXT, pad, pad])
    batch = torch.full((2, len(SEQUENCE)), pad)
    batch[0], batch[1, : len(second)] = first, second
    padding = (batch != pad).long()
    masks = memento_attention_mask(batch, D, response_start=torch.tensor([0, 2]), padding_mask=padding)
    assert masks.shape == (2, 1, 19, 19)
    assert torch.equal(masks[0, 0], memento_attention_mask(first, D)[0, 0])
    row = masks[1, 0]
    assert not row[9, 4] and row[8, 4] and row[9, 3]
    assert not row[:, 10:].any()  # padding keys are hidden from every query
    assert row[12, :10].sum() == 9  # a padding query still sees real tokens (no empty softmax row)


def test_malformed_output_is_handled_the_same_way_everywhere():
    # A memento closed without <|block_end|>/<|summary_start|>: the content ends at <|summary_end|>.
    until = visible_until(torch.tensor([TXT, BS, TXT, TXT, SE, TXT, SE, TXT]), D).tolist()
    assert until[2:4] == [4, 4] and until[4:] == [NEVER] * 4


def test_eager_gets_an_additive_mask_and_sdpa_the_boolean_one():
    mask = memento_attention_mask(torch.tensor(SEQUENCE), D)
    assert to_model_mask(mask, "sdpa", torch.float32) is mask
    additive = to_model_mask(mask, "eager", torch.bfloat16)
    assert additive.dtype == torch.bfloat16
    assert torch.equal(additive == 0, mask)
    assert (additive[~mask] == torch.finfo(torch.bfloat16).min).all()


def test_a_sliding_window_intersects_the_memento_rule():
    full = memento_attention_mask(torch.tensor(SEQUENCE), D)[0, 0]
    windowed = memento_attention_mask(torch.tensor(SEQUENCE), D, window=4)[0, 0]
    query, key = torch.arange(19).unsqueeze(-1), torch.arange(19)
    assert torch.equal(windowed, full & (key > query - 4))  # transformers' convention: key > query - window
    assert windowed[9, 6] and not windowed[9, 5] and not windowed[10, 6]
    assert windowed.sum(-1).max() == 4


def test_padding_is_hidden_in_visible_until():
    ids = torch.tensor([[TXT, BS, TXT, BE, SS, TXT, SE, TXT], [TXT, BS, TXT, SE, 0, 0, 0, 0]])
    padding = (torch.arange(8) < torch.tensor([[8], [4]])).long()
    until = visible_until(ids, D, padding_mask=padding)
    assert until[1].tolist() == [NEVER, NEVER, 3, NEVER, HIDDEN, HIDDEN, HIDDEN, HIDDEN]
    assert until[0, 2] == 6


def test_layer_windows_follow_the_model_config():
    from transformers import LlamaConfig, MistralConfig, Olmo3Config

    small = {"hidden_size": 32, "num_attention_heads": 2, "num_hidden_layers": 4, "vocab_size": 16}
    assert layer_windows(LlamaConfig(**small)) == {"full_attention": None}
    assert layer_windows(MistralConfig(sliding_window=8, **small)) == {"sliding_attention": 8}
    olmo = Olmo3Config(sliding_window=8, **small)
    assert layer_windows(olmo) == {"sliding_attention": 8, "full_attention": None}
    assert per_layer_windows(olmo) == [8, 8, 8, None]  # three sliding layers, then a full one


def test_model_mask_is_one_tensor_or_one_per_layer_type():
    until = visible_until(torch.tensor([SEQUENCE]), D)
    masks = {None: dense_mask(until), 4: dense_mask(until, 4)}
    assert model_mask(masks, {"full_attention": None}, "sdpa", torch.float32) is masks[None]
    mixed = model_mask(masks, {"sliding_attention": 4, "full_attention": None}, "eager", torch.float32)
    assert set(mixed) == {"sliding_attention", "full_attention"}
    assert torch.equal(mixed["sliding_attention"] == 0, masks[4]) and torch.equal(
        mixed["full_attention"] == 0, masks[None]
    )
