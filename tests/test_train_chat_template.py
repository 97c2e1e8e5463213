"""Training and generation use the model's own chat template; labels sit exactly on the assistant tokens."""

import functools

import pytest
from support.tiny_model import FAMILIES, memento_rows, tiny_model_path

from openmementos.chat import CHATML_TEMPLATE, ChatFormat, encode_prompt
from openmementos.format import DELIMITERS
from openmementos.train.data import IGNORE_INDEX, encode_conversations
from openmementos.train.special_tokens import prepare_model_and_tokenizer


@functools.cache
def prepared(family: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path(family))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path(family))
    prepare_model_and_tokenizer(model, tokenizer)
    return model.eval(), tokenizer


EXPECTED = {
    # family: (what the prompt ends with, how the assistant turn opens, the end-of-turn token)
    "llama": ("<|im_start|>assistant\n", "<think>\n<|block_start|>", "<|im_end|>"),  # ChatML fallback
    "qwen3": ("<|im_start|>assistant\n", "<think>\n<|block_start|>", "<|im_end|>"),
    "phi3": ("<|im_start|>assistant<|im_sep|>", "<think>\n<|block_start|>", "<|im_end|>"),
    "olmo3": ("<|im_start|>assistant\n<think>", "\n<|block_start|>", "<|endoftext|>"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_cover_exactly_the_assistant_turn_of_the_template(family):
    _, tokenizer = prepared(family)
    prompt_end, response_start, end_of_turn = EXPECTED[family]
    rows = memento_rows(2)
    encoded = encode_conversations(tokenizer, [r["problem"] for r in rows], [r["response"] for r in rows])
    for row, ids, labels in zip(rows, encoded["input_ids"], encoded["labels"], strict=True):
        prompt = encode_prompt(tokenizer, row["problem"])
        # The prompt is the template's own generation prompt, token for token: what generation feeds.
        template_prompt = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["problem"]}], add_generation_prompt=True, tokenize=True, return_dict=True
        )
        assert prompt == list(template_prompt["input_ids"])
        assert tokenizer.decode(prompt).endswith(prompt_end)
        assert ids[: len(prompt)] == prompt and labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert labels[len(prompt) :] == ids[len(prompt) :]  # every assistant token is trained on
        answer = tokenizer.decode(labels[len(prompt) :])
        assert answer.startswith(response_start) and answer.endswith(
            row["response"].split("</think>")[-1] + end_of_turn
        )
        assert all(answer.count(d) == row["response"].count(d) for d in DELIMITERS)
        # The whole sequence is the template's rendering of the exchange, up to its end-of-turn token.
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": row["problem"]}, {"role": "assistant", "content": row["response"]}],
            tokenize=False,
        )
        assert rendered.startswith(tokenizer.decode(ids))
        assert tokenizer.convert_ids_to_tokens(ids[-1]) == end_of_turn


def test_qwen3_template_renders_the_response_its_own_way():
    _, tokenizer = prepared("qwen3")
    row = memento_rows(1)[0]
    response = tokenizer.decode(ChatFormat(tokenizer).encode(row["problem"], row["response"]).response_ids)
    assert "</think>\nThe answer" in row["response"]
    assert "</think>\n\nThe answer" in response  # Qwen3 writes a blank line after its reasoning


@pytest.mark.parametrize("family", FAMILIES)
def test_generation_prompts_and_stops_with_the_template(family):
    from openmementos.infer.hf import generate_hf, make_sampler, stop_token_ids

    model, tokenizer = prepared(family)
    chat = ChatFormat(tokenizer)
    assert stop_token_ids(tokenizer) == set(chat.end_of_turn_ids)
    assert tokenizer.convert_tokens_to_ids(EXPECTED[family][2]) in chat.end_of_turn_ids
    result = generate_hf(model, tokenizer, "Find x.", max_new_tokens=6, sampler=make_sampler(1.0, 1.0, seed=1))
    assert result.prompt_tokens == len(chat.encode_prompt("Find x."))


def test_chatml_is_set_only_for_tokenizers_without_a_template():
    _, chatml = prepared("llama")
    assert chatml.chat_template == CHATML_TEMPLATE  # stage 1 writes it into the saved tokenizer
    _, own = prepared("phi3")
    assert "<|im_sep|>" in own.chat_template
    assert own.convert_tokens_to_ids("<|im_start|>") < 600  # its own marker, not a freshly added one


def test_a_template_whose_turn_does_not_extend_its_prompt_is_refused():
    _, tokenizer = prepared("qwen3")
    tokenizer = tokenizer.__class__.from_pretrained(tiny_model_path("qwen3"))
    # Like a "thinking off" generation prompt: an empty think block the assistant turn does not repeat.
    tokenizer.chat_template = tokenizer.chat_template.replace(
        "{{- '<|im_start|>assistant\\n' }}{%- endif %}",
        "{{- '<|im_start|>assistant\\n<think>\\n\\n</think>' }}{%- endif %}",
    )
    assert "</think>' }}{%- endif %}" in tokenizer.chat_template
    with pytest.raises(ValueError, match="does not extend its own generation prompt"):
        ChatFormat(tokenizer).encode("q", "<think>\nreasoning\n</think>\nanswer")
