"""Rows as conversations in the model's chat template, and the collator that builds stage-1 / stage-2 batches.

A row becomes one exchange (`openmementos.chat`): the user turn is `problem`, the assistant turn is
`response` as the model's own template renders it, up to its end-of-turn token (ChatML for tokenizers
without a template). Labels are -100 on the prompt: the loss covers the assistant tokens only, and the
prompt tokens are the ones generation later feeds (`encode_prompt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from openmementos.chat import ChatFormat, encode_prompt
from openmementos.train.attention import DelimiterIds, dense_mask, model_mask, visible_until
from openmementos.train.block_attention import IMPLEMENTATIONS, MEMENTO_KWARG

IGNORE_INDEX = -100

__all__ = ["IGNORE_INDEX", "MementoCollator", "encode_conversations", "encode_prompt"]


def encode_conversations(tokenizer, problems: Sequence[str], responses: Sequence[str]) -> dict[str, list]:
    """Tokenise (problem, response) pairs into `input_ids` and `labels` (assistant tokens only)."""
    chat = ChatFormat(tokenizer)
    input_ids, labels = [], []
    for problem, response in zip(problems, responses, strict=True):
        encoded = chat.encode(problem, response)
        input_ids.append(encoded.input_ids)
        labels.append([IGNORE_INDEX] * len(encoded.prompt_ids) + encoded.response_ids)
    return {"input_ids": input_ids, "labels": labels}


@dataclass
class MementoCollator:
    """Pads a batch on the right and adds position ids and the attention inputs of the stage.

    Stage 1: a 2D padding mask (the model applies ordinary causal attention). Stage 2, where the
    assistant response starts at the first labelled token: for the `memento_blocks` / `memento_flex`
    implementations the row's `visible_until` under `memento_visible_until` (no mask at all); for
    `sdpa` / `eager` the dense reference mask, one per sliding window in `windows` (layer type ->
    window, from `openmementos.train.attention.layer_windows`).
    """

    pad_token_id: int
    stage: int
    delimiters: DelimiterIds | None = None
    mask_delimiters: bool = False
    attn_implementation: str = "sdpa"
    dtype: torch.dtype = torch.float32
    windows: dict[str, int | None] = field(default_factory=lambda: {"full_attention": None})

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(features), length), IGNORE_INDEX, dtype=torch.long)
        padding = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[row, :n] = torch.as_tensor(feature["input_ids"])
            labels[row, :n] = torch.as_tensor(feature["labels"])
            padding[row, :n] = 1
        batch = {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": torch.arange(length).expand(len(features), length).clone(),
        }
        if self.stage == 1:
            batch["attention_mask"] = padding
            return batch
        if self.delimiters is None:
            raise ValueError("stage 2 needs the delimiter token ids")
        until = visible_until(
            input_ids,
            self.delimiters,
            mask_delimiters=self.mask_delimiters,
            response_start=(labels != IGNORE_INDEX).long().argmax(-1),
            padding_mask=padding,
        )
        if self.attn_implementation in IMPLEMENTATIONS:
            batch[MEMENTO_KWARG] = until
        else:
            per_window = {window: dense_mask(until, window) for window in set(self.windows.values())}
            batch["attention_mask"] = model_mask(per_window, self.windows, self.attn_implementation, self.dtype)
        return batch
