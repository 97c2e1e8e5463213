"""Block-structured (and FlexAttention) memento attention equals the dense reference: logits, loss, gradients."""

import functools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from support.tiny_model import FAMILIES, memento_rows, tiny_model_path

from openmementos.train.attention import HIDDEN, DelimiterIds, dense_mask, layer_windows, visible_until
from openmementos.train.block_attention import BLOCKS, FLEX, MEMENTO_KWARG, register_memento_attention, row_chunks
from openmementos.train.data import MementoCollator, encode_conversations
from openmementos.train.special_tokens import prepare_model_and_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")

D = DelimiterIds(block_start=1, block_end=2, summary_start=3, summary_end=4)


def chunks_as_dense(until: torch.Tensor, window: int | None) -> torch.Tensor:
    """Rebuild the `(seq, seq)` visibility the chunks compute, to compare it with the dense mask."""
    length = until.shape[-1]
    rebuilt = torch.zeros(length, length, dtype=torch.bool)
    for chunk in row_chunks(until, window):
        rows = torch.arange(chunk.start, chunk.stop)
        if chunk.mask is None:  # the lead keys for every query, then the chunk itself causally
            assert torch.equal(chunk.keys[chunk.lead :], rows)
            causal = torch.ones(len(rows), len(rows), dtype=torch.bool).tril()
            mask = torch.cat([torch.ones(len(rows), chunk.lead, dtype=torch.bool), causal], dim=1)
        else:
            mask = chunk.mask
        assert not rebuilt[rows.unsqueeze(-1), chunk.keys].any()  # every (query, key) pair is computed once
        rebuilt[rows.unsqueeze(-1), chunk.keys] = mask
    return rebuilt


@settings(max_examples=150, deadline=None)
@given(
    tokens=st.lists(st.sampled_from([9, 9, 9, 1, 2, 3, 4]), min_size=1, max_size=60),
    padding=st.integers(0, 5),
    window=st.sampled_from([None, 1, 3, 7, 16]),
    mask_delimiters=st.booleans(),
)
def test_chunks_compute_exactly_the_dense_mask(tokens, padding, window, mask_delimiters):
    ids = torch.tensor(tokens + [0] * padding)
    real = torch.arange(len(ids)) < len(tokens)
    until = visible_until(ids, D, mask_delimiters=mask_delimiters, padding_mask=real)
    reference = dense_mask(until[None], window)[0, 0][: len(tokens), : len(tokens)]
    assert torch.equal(chunks_as_dense(until, window)[: len(tokens), : len(tokens)], reference)
    for chunk in row_chunks(until, window):  # nothing hidden is ever gathered
        assert bool((until[chunk.keys] >= chunk.start).all())
        if window is None:
            assert chunk.mask is None  # full-attention layers never build a mask
        else:
            assert bool((chunk.keys > chunk.start - window).all()) and chunk.stop - chunk.start <= window


def test_evicted_blocks_cost_no_compute():
    block, memento = [9] * 100, [3, 9, 9, 4]
    ids = torch.tensor([9] * 20 + [1, *block, 2, *memento] * 8 + [9] * 10)
    until = visible_until(ids, D)
    chunks = row_chunks(until)
    assert len(chunks) == 9  # one per eviction, plus the answer
    computed = sum((c.stop - c.start) * len(c.keys) for c in chunks)  # (query, key) pairs in the SDPA calls
    assert computed < len(ids) ** 2 / 5  # the dense mask has seq x seq, and the gap grows with the blocks
    assert max(len(c.keys) for c in chunks) < 200  # the prompt, delimiters, mementos and one block


def test_left_padding_is_refused():
    with pytest.raises(ValueError, match="right padding"):
        row_chunks(torch.tensor([HIDDEN, 5, 5]))


@functools.cache
def prepared(family: str):
    """The family's tiny model with the memento tokens added, saved once (stage 2's starting point)."""
    import tempfile

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tempfile.mkdtemp(prefix=f"prepared-{family}-")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path(family))
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path(family))
    prepare_model_and_tokenizer(model, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, tokenizer


def load(family: str, implementation: str):
    from transformers import AutoModelForCausalLM

    register_memento_attention()
    return AutoModelForCausalLM.from_pretrained(prepared(family)[0], attn_implementation=implementation)


def stage_two_batch(family: str, implementation: str, mask_delimiters: bool) -> tuple[dict, list[int]]:
    """Three rows of different lengths and block counts, right-padded."""
    tokenizer = prepared(family)[1]
    rows = memento_rows(3, blocks_per_row=3)
    rows[1] = memento_rows(2, blocks_per_row=2)[1]
    rows[2]["response"] = rows[2]["response"][:150]  # cut inside a block: an unfinished one
    encoded = encode_conversations(tokenizer, [r["problem"] for r in rows], [r["response"] for r in rows])
    features = [{"input_ids": i, "labels": label} for i, label in zip(*encoded.values(), strict=True)]
    collator = MementoCollator(
        pad_token_id=tokenizer.pad_token_id,
        stage=2,
        delimiters=DelimiterIds.from_tokenizer(tokenizer),
        mask_delimiters=mask_delimiters,
        attn_implementation=implementation,
        windows=layer_windows(load(family, "sdpa").config),
    )
    return collator(features), [len(f["input_ids"]) for f in features]


@pytest.mark.parametrize("family", FAMILIES)
def test_block_attention_equals_the_dense_reference_with_gradients(family):
    mask_delimiters = family == "phi3"  # the Phi recipe hides the delimiters too
    dense, blocks = load(family, "sdpa"), load(family, BLOCKS)
    dense_batch, lengths = stage_two_batch(family, "sdpa", mask_delimiters)
    block_batch, _ = stage_two_batch(family, BLOCKS, mask_delimiters)
    assert "attention_mask" not in block_batch and block_batch[MEMENTO_KWARG].shape == dense_batch["input_ids"].shape
    assert len(set(lengths)) == 3  # padding really is exercised

    reference, candidate = dense(**dense_batch), blocks(**block_batch)
    for row, length in enumerate(lengths):
        torch.testing.assert_close(candidate.logits[row, :length], reference.logits[row, :length], atol=1e-5, rtol=0)
    torch.testing.assert_close(candidate.loss, reference.loss, atol=1e-6, rtol=1e-6)
    reference.loss.backward()
    candidate.loss.backward()
    grads = dict(dense.named_parameters())
    for name, parameter in blocks.named_parameters():
        torch.testing.assert_close(parameter.grad, grads[name].grad, atol=2e-6, rtol=1e-4, msg=name)

    # Not vacuous: plain causal attention computes something else on the same batch, far beyond the tolerance.
    with torch.no_grad():
        causal = dense(input_ids=dense_batch["input_ids"]).logits
    for row, length in enumerate(lengths[:2]):  # the rows whose blocks are closed
        gap = (causal[row, :length] - reference.logits[row, :length].detach()).abs().max()
        assert gap > 1e-2


@pytest.mark.parametrize("family", ["llama", "olmo3"])
def test_flex_attention_forward_equals_the_dense_reference(family):
    dense, flex = load(family, "sdpa").eval(), load(family, FLEX).eval()
    dense_batch, lengths = stage_two_batch(family, "sdpa", False)
    flex_batch, _ = stage_two_batch(family, FLEX, False)
    with torch.no_grad():
        reference, candidate = dense(**dense_batch), flex(**flex_batch)
    for row, length in enumerate(lengths):
        torch.testing.assert_close(candidate.logits[row, :length], reference.logits[row, :length], atol=1e-5, rtol=0)


def test_flex_refuses_to_train_on_cpu_and_both_fall_back_to_causal_sdpa():
    flex = load("llama", FLEX).train()
    batch, _ = stage_two_batch("llama", FLEX, False)
    with pytest.raises(ValueError, match="no backward on CPU"):
        flex(**batch)
    # Without memento_visible_until (stage 1) they are ordinary causal attention with the padding mask.
    plain = load("llama", "sdpa").eval()
    inputs = {"input_ids": batch["input_ids"], "attention_mask": (batch[MEMENTO_KWARG] != HIDDEN).long()}
    with torch.no_grad():
        expected = plain(**inputs).logits
        for implementation in (BLOCKS, FLEX):
            torch.testing.assert_close(load("llama", implementation).eval()(**inputs).logits, expected)


def test_decoding_through_block_attention_is_refused():
    model = load("llama", BLOCKS).eval()
    batch, _ = stage_two_batch("llama", BLOCKS, False)
    from transformers import DynamicCache

    with torch.no_grad(), pytest.raises(ValueError, match="whole training sequences"):
        model(input_ids=batch["input_ids"][:1, :5], cache=DynamicCache(), **{MEMENTO_KWARG: batch[MEMENTO_KWARG][:1]})


@pytest.mark.slow
def test_compiled_flex_attention_forward_on_cpu(monkeypatch):
    """The compiled kernel and mask of the GPU path (CPU forward only; ~30 s to compile)."""
    from openmementos.train import block_attention

    monkeypatch.setattr(block_attention, "COMPILE_FLEX", True)
    test_flex_attention_forward_equals_the_dense_reference("olmo3")


def test_the_windowed_reference_is_transformers_own_sliding_window():
    """Without any eviction, our per-window masks reproduce Olmo 3's own sliding-window attention."""
    from openmementos.train.attention import NEVER, model_mask

    model = load("olmo3", "sdpa").eval()
    ids = torch.tensor([list(range(5, 125))])  # 120 tokens, well past the 32-token window
    windows = layer_windows(model.config)
    until = torch.full(ids.shape, NEVER)
    masks = {window: dense_mask(until, window) for window in set(windows.values())}
    with torch.no_grad():
        own = model(input_ids=ids).logits
        ours = model(input_ids=ids, attention_mask=model_mask(masks, windows, "sdpa", torch.float32)).logits
        full = model(
            input_ids=ids,
            attention_mask=model_mask({None: masks[None], 32: masks[None]}, windows, "sdpa", torch.float32),
        ).logits
    torch.testing.assert_close(ours, own, atol=1e-5, rtol=0)
    assert (full - own).abs().max() > 1e-3  # the window really matters at this length
