"""The evicting HF decoder computes exactly what the stage-2 masked forward pass computes."""

import functools
import itertools

import pytest
import torch
from support.tiny_model import memento_rows, tiny_model_path

from openmementos.infer.hf import EvictingDecoder, generate_hf, make_sampler
from openmementos.kvsim import simulate_kv
from openmementos.train.attention import DelimiterIds, memento_attention_mask, to_model_mask
from openmementos.train.data import IGNORE_INDEX, encode_conversations
from openmementos.train.special_tokens import prepare_model_and_tokenizer


@functools.cache
def load_prepared(attn_implementation: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation=attn_implementation)
    prepare_model_and_tokenizer(model, tokenizer)
    return model.eval(), tokenizer


@pytest.fixture(params=["sdpa", "eager"])
def prepared_any(request):
    """Both 4D-mask attention implementations (boolean mask for SDPA, additive for eager)."""
    return load_prepared(request.param)


@pytest.fixture
def prepared():
    return load_prepared("sdpa")


def memento_sequence(tokenizer, blocks: int) -> tuple[torch.Tensor, int]:
    row = memento_rows(1, blocks_per_row=blocks)[0]
    encoded = encode_conversations(tokenizer, [row["problem"]], [row["response"]])
    labels = encoded["labels"][0]
    return torch.tensor(encoded["input_ids"][0]), labels.index(next(t for t in labels if t != IGNORE_INDEX))


def masked_forward(model, ids, delimiters, response_start, mask_delimiters=False) -> torch.Tensor:
    mask = memento_attention_mask(ids, delimiters, mask_delimiters=mask_delimiters, response_start=response_start)
    with torch.no_grad():
        return model(
            input_ids=ids[None],
            position_ids=torch.arange(len(ids))[None],
            attention_mask=to_model_mask(mask, model.config._attn_implementation, model.dtype),
        ).logits[0]


@pytest.mark.parametrize("mask_delimiters", [False, True])
def test_token_by_token_eviction_equals_the_masked_forward_pass(prepared_any, mask_delimiters):
    model, tokenizer = prepared_any
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    ids, start = memento_sequence(tokenizer, blocks=3)
    reference = masked_forward(model, ids, delimiters, start, mask_delimiters)

    decoder = EvictingDecoder(model, delimiters, mask_delimiters=mask_delimiters, response_start=start)
    logits = [decoder.feed(ids[:start].tolist())]  # prefill the prompt, then one token at a time
    logits += [decoder.feed([token]) for token in ids[start:].tolist()]
    torch.testing.assert_close(torch.cat(logits), reference, atol=1e-4, rtol=0)

    # The cache really shrank: three blocks left, gaps stay in the original positions.
    assert decoder.blocks_evicted == 3
    assert decoder.kv_tokens < len(ids)
    positions = decoder.cache_positions
    assert positions[-1] == len(ids) - 1 and bool((positions[1:] - positions[:-1] > 1).any())
    assert all(layer.keys.shape[-2] == decoder.kv_tokens for layer in decoder.cache.layers)
    # The comparison is not vacuous: plain causal attention gives other logits after a memento.
    with torch.no_grad():
        causal = model(input_ids=ids[None]).logits[0]
    assert (causal - reference).abs().max() > 1e-2


def test_chunked_prefill_across_mementos_matches_too(prepared):
    model, tokenizer = prepared
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    ids, start = memento_sequence(tokenizer, blocks=3)
    reference = masked_forward(model, ids, delimiters, start)
    decoder = EvictingDecoder(model, delimiters, response_start=start)
    cuts = [0, start + 7, start + 60, start + 61, len(ids)]
    logits = torch.cat([decoder.feed(ids[a:b].tolist()) for a, b in itertools.pairwise(cuts)])
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=0)


def test_peak_kv_matches_the_simulation(prepared):
    """What the decoder holds at its peak is what kvsim computes from the piece lengths."""
    model, tokenizer = prepared
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    ids, start = memento_sequence(tokenizer, blocks=4)
    row = memento_rows(1, blocks_per_row=4)[0]
    decoder = EvictingDecoder(model, delimiters, response_start=start)
    for token in ids.tolist():
        decoder.feed([token], last_logits_only=True)

    def n_tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False))

    from openmementos.format import parse_response

    parsed = parse_response(row["response"])
    footprint = simulate_kv(
        start + n_tokens("<think>\n"),
        [n_tokens(b) for b in parsed.blocks],
        [n_tokens(m) for m in parsed.mementos],
        n_tokens("\n</think>\n" + parsed.answer + "<|im_end|>"),
    )
    assert footprint.peak_without_eviction == len(ids)
    assert (decoder.peak_kv_tokens, decoder.blocks_evicted) == (footprint.peak_with_eviction, 4)


def test_generate_reports_kv_accounting(prepared):
    model, tokenizer = prepared
    result = generate_hf(model, tokenizer, "Find x.", max_new_tokens=12, sampler=make_sampler(1.0, 0.9, seed=3))
    assert result.tokens_generated <= 12
    assert result.finish_reason in ("stop", "length")
    fed = result.prompt_tokens + result.tokens_generated - 1
    assert result.peak_kv_tokens_without_eviction == fed
    assert result.peak_kv_tokens <= fed
    baseline = generate_hf(model, tokenizer, "Find x.", max_new_tokens=12, evict=False)
    assert baseline.peak_kv_tokens == baseline.peak_kv_tokens_without_eviction


def test_sliding_window_models_are_refused():
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=32, hidden_size=64, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, sliding_window=4,
    )  # fmt: skip
    with pytest.raises(ValueError, match="full-attention"):
        EvictingDecoder(MistralForCausalLM(config), DelimiterIds(1, 2, 3, 4))
