"""ChatML formatting: the loss covers the assistant tokens only; the collator builds each stage's batch."""

import torch
from support.tiny_model import memento_rows, tiny_model_path

from openmementos.train.attention import DelimiterIds, memento_attention_mask
from openmementos.train.data import IGNORE_INDEX, MementoCollator, chat_prompt, encode_conversations, encode_prompt
from openmementos.train.special_tokens import prepare_model_and_tokenizer


def prepared_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    prepare_model_and_tokenizer(AutoModelForCausalLM.from_pretrained(tiny_model_path()), tokenizer)
    return tokenizer


def test_labels_cover_exactly_the_assistant_turn():
    tokenizer = prepared_tokenizer()
    rows = memento_rows(2)
    encoded = encode_conversations(tokenizer, [r["problem"] for r in rows], [r["response"] for r in rows])
    for row, ids, labels in zip(rows, encoded["input_ids"], encoded["labels"], strict=True):
        prompt = encode_prompt(tokenizer, row["problem"])
        assert ids[: len(prompt)] == prompt  # generation feeds exactly these prompt tokens
        assert labels[: len(prompt)] == [IGNORE_INDEX] * len(prompt)
        assert IGNORE_INDEX not in labels[len(prompt) :]
        assert labels[len(prompt) :] == ids[len(prompt) :]
        assert tokenizer.decode(labels[len(prompt) :]) == row["response"] + "<|im_end|>"
        assert tokenizer.decode(ids) == chat_prompt(row["problem"]) + row["response"] + "<|im_end|>"


def test_collator_pads_and_builds_the_stage_masks():
    tokenizer = prepared_tokenizer()
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    rows = memento_rows(2, blocks_per_row=2)
    rows[1]["response"] = rows[1]["response"][:200]  # shorter row: gets padded
    encoded = encode_conversations(tokenizer, [r["problem"] for r in rows], [r["response"] for r in rows])
    features = [{"input_ids": i, "labels": label} for i, label in zip(*encoded.values(), strict=True)]
    lengths = [len(f["input_ids"]) for f in features]

    stage1 = MementoCollator(pad_token_id=0, stage=1)(features)
    assert stage1["input_ids"].shape == (2, max(lengths))
    assert stage1["attention_mask"].tolist()[1] == [1] * lengths[1] + [0] * (max(lengths) - lengths[1])
    assert (stage1["labels"][1, lengths[1] :] == IGNORE_INDEX).all()
    assert torch.equal(stage1["position_ids"][1], torch.arange(max(lengths)))

    stage2 = MementoCollator(pad_token_id=0, stage=2, delimiters=delimiters)(features)
    mask = stage2["attention_mask"]
    assert mask.shape == (2, 1, max(lengths), max(lengths)) and mask.dtype == torch.bool
    start = encoded["labels"][0].index(next(t for t in encoded["labels"][0] if t != IGNORE_INDEX))
    ids = torch.tensor(features[0]["input_ids"])
    assert torch.equal(mask[0], memento_attention_mask(ids, delimiters, response_start=start)[0])
    assert not torch.equal(mask[0, 0], torch.ones_like(mask[0, 0]).tril())  # blocks really are hidden
    assert not mask[1, 0, :, lengths[1] :].any()

    eager = MementoCollator(pad_token_id=0, stage=2, delimiters=delimiters, attn_implementation="eager")(features)
    assert eager["attention_mask"].dtype == torch.float32 and torch.equal(eager["attention_mask"] == 0, mask)
