"""The evicting HF decoder computes exactly what the stage-2 masked forward pass computes, in every family."""

import functools
import itertools

import pytest
import torch
from support.tiny_model import FAMILIES, OLMO3_WINDOW, memento_rows, tiny_config, tiny_model_path

from openmementos.infer.hf import EvictingDecoder, generate_hf, make_sampler
from openmementos.kvsim import simulate_kv
from openmementos.train.attention import (
    DelimiterIds,
    dense_mask,
    layer_windows,
    model_mask,
    visibility,
    visible_until,
)
from openmementos.train.data import IGNORE_INDEX, encode_conversations
from openmementos.train.special_tokens import prepare_model_and_tokenizer


@functools.cache
def load_prepared(attn_implementation: str, family: str = "llama"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny_model_path(family)
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
    """One stage-2 forward pass with the dense reference mask (windowed for sliding layers)."""
    until = visible_until(ids[None], delimiters, mask_delimiters=mask_delimiters, response_start=response_start)
    windows = layer_windows(model.config)
    masks = {window: dense_mask(until, window) for window in set(windows.values())}
    with torch.no_grad():
        return model(
            input_ids=ids[None],
            position_ids=torch.arange(len(ids))[None],
            attention_mask=model_mask(masks, windows, model.config._attn_implementation, model.dtype),
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


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_decodes_with_eviction_exactly_as_the_masked_forward_pass(family):
    """Qwen3, Phi-3/4 (delimiters evicted too) and Olmo 3 (sliding-window layers) as well as Llama."""
    model, tokenizer = load_prepared("sdpa", family)
    mask_delimiters = family == "phi3"
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    ids, start = memento_sequence(tokenizer, blocks=3)
    reference = masked_forward(model, ids, delimiters, start, mask_delimiters)
    decoder = EvictingDecoder(model, delimiters, mask_delimiters=mask_delimiters, response_start=start)
    logits = [decoder.feed(ids[:start].tolist())]
    for token in ids[start:].tolist():
        logits.append(decoder.feed([token]))
        check_cache_holds_exactly_the_visible_keys(decoder, ids, start, mask_delimiters)
    torch.testing.assert_close(torch.cat(logits), reference, atol=1e-4, rtol=0)
    assert decoder.blocks_evicted == 3
    assert decoder.peak_kv_tokens < decoder.peak_kv_tokens_without_eviction
    if family == "olmo3":
        sliding = [layer for layer, w in zip(decoder.cache.layers, decoder.layer_window, strict=True) if w]
        assert len(sliding) == 3 and all(layer.keys.shape[-2] < OLMO3_WINDOW for layer in sliding)
        assert decoder.peak_kv_tokens_without_eviction < len(ids)  # the window bounds the baseline too


def check_cache_holds_exactly_the_visible_keys(decoder, ids, start, mask_delimiters):
    """Each layer holds the keys the next query may see: the memento rule and its window, nothing else."""
    fed = len(decoder.token_ids)
    until = visible_until(ids[:fed], decoder.delimiters, mask_delimiters=mask_delimiters, response_start=start)
    for window, held in decoder.positions.items():
        expected = visibility(torch.tensor([fed]), torch.arange(fed), until, window)[0].nonzero().squeeze(-1)
        assert torch.equal(held, expected), (window, fed)
    for layer, window in zip(decoder.cache.layers, decoder.layer_window, strict=True):
        assert layer.keys.shape[-2] == len(decoder.positions[window])


def test_models_whose_every_layer_slides_decode_exactly_too():
    """Phi-3 with `sliding_window` (and Mistral-style models): one window on every layer, one mask tensor."""
    from transformers import AutoModelForCausalLM

    _, tokenizer = load_prepared("sdpa", "phi3")
    config = tiny_config("phi3", tokenizer)
    config.sliding_window = 24
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    ids, start = memento_sequence(tokenizer, blocks=3)
    reference = masked_forward(model, ids, delimiters, start)
    decoder = EvictingDecoder(model, delimiters, response_start=start)
    cuts = [0, start, *range(start + 31, len(ids), 31), len(ids)]  # chunks longer than the window
    logits = torch.cat([decoder.feed(ids[a:b].tolist()) for a, b in itertools.pairwise(cuts)])
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=0)
    assert list(decoder.positions) == [24] and decoder.kv_tokens < 24 and decoder.blocks_evicted == 3


def test_unsupported_attention_layers_are_refused():
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=32, hidden_size=32, num_attention_heads=2, num_hidden_layers=1)
    config.layer_types, config.attention_chunk_size = ["chunked_attention"], 8
    with pytest.raises(ValueError, match="full and sliding-window"):
        EvictingDecoder(LlamaForCausalLM(config), DelimiterIds(1, 2, 3, 4))
