"""New delimiter tokens start from the mean embedding of their related words, plus a little noise."""

import pytest
import torch
from support.tiny_model import tiny_model_path

from openmementos.format import DELIMITERS
from openmementos.train.special_tokens import (
    CHAT_START,
    NOISE_SCALE,
    RELATED_WORDS,
    prepare_model_and_tokenizer,
)


def load_tiny():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model_path()), AutoTokenizer.from_pretrained(tiny_model_path())


def word_rows(weight: torch.Tensor, tokenizer, words) -> torch.Tensor:
    ids = [min((tokenizer.encode(w, add_special_tokens=False) for w in (f" {word}", word)), key=len) for word in words]
    assert all(len(i) == 1 for i in ids)
    return weight[[i[0] for i in ids]]


def test_new_rows_are_the_related_word_mean_plus_small_noise():
    model, tokenizer = load_tiny()
    before_in = model.get_input_embeddings().weight.detach().clone()
    before_out = model.get_output_embeddings().weight.detach().clone()
    inits = prepare_model_and_tokenizer(model, tokenizer, seed=1)

    assert [i.token for i in inits] == list(DELIMITERS)  # the tiny tokenizer already has ChatML
    assert {i.source for i in inits} == {"words"}
    embeddings = model.get_input_embeddings().weight.detach()
    assert embeddings.shape[0] == len(tokenizer) == before_in.shape[0] + 4
    assert torch.equal(embeddings[: before_in.shape[0]], before_in)  # old rows untouched
    for weight, before in ((embeddings, before_in), (model.get_output_embeddings().weight.detach(), before_out)):
        noise_std = before.std() * NOISE_SCALE
        for init in inits:
            mean = word_rows(before, tokenizer, RELATED_WORDS[init.token]).mean(0)
            offset = weight[init.token_id] - mean
            assert 0 < offset.abs().max() < 6 * noise_std  # close to the word mean, yet not identical
    rows = embeddings[[i.token_id for i in inits]]
    assert torch.cdist(rows, rows).masked_fill(torch.eye(4, dtype=torch.bool), 1).min() > 0

    # Each delimiter is now one unsplittable token, and a second call changes nothing.
    assert tokenizer.encode(f"a{DELIMITERS[0]}b", add_special_tokens=False)[1] == inits[0].token_id
    assert prepare_model_and_tokenizer(model, tokenizer) == []


def tokenizer_from(vocab_words: list[str], model_type: str):
    """A small tokenizer (byte-level BPE on digits, or word-level with an unknown token) and a model for it."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    if model_type == "bpe":
        backend = Tokenizer(models.BPE())
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        backend.train_from_iterator(vocab_words, trainer=trainer)
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend)
    else:
        backend = Tokenizer(models.WordLevel({"[UNK]": 0, **{w: i + 1 for i, w in enumerate(vocab_words)}}, "[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=1, tie_word_embeddings=True,
    )  # fmt: skip
    return LlamaForCausalLM(config), tokenizer


@pytest.mark.parametrize(
    ("model_type", "expected"),
    [("bpe", "word pieces"), ("word", "vocabulary mean")],
)
def test_fallbacks_when_no_related_word_is_a_single_token(model_type, expected):
    model, tokenizer = tokenizer_from(["0123456789 42 17"] * 5, model_type)
    vocabulary_mean = model.get_input_embeddings().weight.detach().mean(0).clone()
    inits = prepare_model_and_tokenizer(model, tokenizer)
    by_token = {i.token: i for i in inits}
    assert set(by_token) == set(RELATED_WORDS)  # ChatML markers were missing too
    assert {by_token[d].source for d in DELIMITERS} == {expected}
    chat = model.get_input_embeddings().weight.detach()[by_token[CHAT_START].token_id]
    assert by_token[CHAT_START].source == "vocabulary mean"
    assert (chat - vocabulary_mean).abs().max() < 0.05
    if expected == "word pieces":
        assert all(len(by_token[d].pieces) > 5 for d in DELIMITERS)  # multi-piece words were averaged
    assert model.get_output_embeddings().weight.shape[0] == len(tokenizer)  # tied head resized with it
