"""The collator builds each stage's batch: padding, labels, and the stage-2 attention inputs."""

import torch
from support.tiny_model import memento_rows, tiny_model_path

from openmementos.train.attention import HIDDEN, DelimiterIds, memento_attention_mask, visible_until
from openmementos.train.block_attention import BLOCKS, MEMENTO_KWARG
from openmementos.train.data import IGNORE_INDEX, MementoCollator, encode_conversations
from openmementos.train.special_tokens import prepare_model_and_tokenizer


def prepared_tokenizer():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    prepare_model_and_tokenizer(AutoModelForCausalLM.from_pretrained(tiny_model_path()), tokenizer)
    return tokenizer


def features_of(tokenizer, rows):
    encoded = encode_conversations(tokenizer, [r["problem"] for r in rows], [r["response"] for r in rows])
    return [{"input_ids": i, "labels": label} for i, label in zip(*encoded.values(), strict=True)], encoded


def test_collator_pads_and_builds_the_stage_inputs():
    tokenizer = prepared_tokenizer()
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    rows = memento_rows(2, blocks_per_row=2)
    rows[1]["response"] = rows[1]["response"][:200]  # shorter row: gets padded
    features, encoded = features_of(tokenizer, rows)
    lengths = [len(f["input_ids"]) for f in features]
    longest = max(lengths)

    stage1 = MementoCollator(pad_token_id=0, stage=1)(features)
    assert stage1["input_ids"].shape == (2, longest)
    assert stage1["attention_mask"].tolist()[1] == [1] * lengths[1] + [0] * (longest - lengths[1])
    assert (stage1["labels"][1, lengths[1] :] == IGNORE_INDEX).all()
    assert torch.equal(stage1["position_ids"][1], torch.arange(longest))

    stage2 = MementoCollator(pad_token_id=0, stage=2, delimiters=delimiters)(features)
    mask = stage2["attention_mask"]
    assert mask.shape == (2, 1, longest, longest) and mask.dtype == torch.bool
    start = encoded["labels"][0].index(next(t for t in encoded["labels"][0] if t != IGNORE_INDEX))
    ids = torch.tensor(features[0]["input_ids"])
    assert torch.equal(mask[0], memento_attention_mask(ids, delimiters, response_start=start)[0])
    assert not torch.equal(mask[0, 0], torch.ones_like(mask[0, 0]).tril())  # blocks really are hidden
    assert not mask[1, 0, :, lengths[1] :].any()

    eager = MementoCollator(pad_token_id=0, stage=2, delimiters=delimiters, attn_implementation="eager")(features)
    assert eager["attention_mask"].dtype == torch.float32 and torch.equal(eager["attention_mask"] == 0, mask)

    # The block-structured implementation gets visible_until itself, and no mask at all.
    blocks = MementoCollator(pad_token_id=0, stage=2, delimiters=delimiters, attn_implementation=BLOCKS)(features)
    assert "attention_mask" not in blocks
    until = blocks[MEMENTO_KWARG]
    assert torch.equal(until[0], visible_until(ids, delimiters, response_start=start))
    assert (until[1, lengths[1] :] == HIDDEN).all() and (until[1, : lengths[1]] != HIDDEN).all()


def test_mixed_window_models_get_one_dense_mask_per_layer_type():
    tokenizer = prepared_tokenizer()
    features, _ = features_of(tokenizer, memento_rows(1, blocks_per_row=2))
    windows = {"sliding_attention": 8, "full_attention": None}
    batch = MementoCollator(
        pad_token_id=0, stage=2, delimiters=DelimiterIds.from_tokenizer(tokenizer), windows=windows
    )(features)
    full, sliding = batch["attention_mask"]["full_attention"], batch["attention_mask"]["sliding_attention"]
    query, key = torch.arange(full.shape[-1]).unsqueeze(-1), torch.arange(full.shape[-1])
    assert torch.equal(sliding[0, 0], full[0, 0] & (key > query - 8))
    assert sliding.sum() < full.sum()
