"""ChatML formatting of `default` rows, and the collator that builds stage-1 / stage-2 batches.

A row becomes one conversation: the user turn is `problem`, the assistant turn is `response` followed by
`<|im_end|>`. Prompt and response are tokenised separately and concatenated, so the loss boundary is
exact and the prompt tokens are the ones generation later feeds (`encode_prompt`). Labels are -100 on
the prompt: the loss covers the assistant tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from openmementos.train.attention import DelimiterIds, memento_attention_mask, to_model_mask
from openmementos.train.special_tokens import CHAT_END, CHAT_START

IGNORE_INDEX = -100


def chat_prompt(problem: str) -> str:
    """The ChatML text before the assistant's answer."""
    return f"{CHAT_START}user\n{problem}{CHAT_END}\n{CHAT_START}assistant\n"


def encode_prompt(tokenizer, problem: str) -> list[int]:
    """Token ids of the chat prompt (with the tokenizer's BOS, if it adds one)."""
    return tokenizer.encode(chat_prompt(problem), add_special_tokens=True)


def encode_conversations(tokenizer, problems: Sequence[str], responses: Sequence[str]) -> dict[str, list]:
    """Tokenise (problem, response) pairs into `input_ids` and `labels` (assistant tokens only)."""
    prompts = tokenizer([chat_prompt(p) for p in problems], add_special_tokens=True)["input_ids"]
    answers = tokenizer([r + CHAT_END for r in responses], add_special_tokens=False)["input_ids"]
    input_ids, labels = [], []
    for prompt, answer in zip(prompts, answers, strict=True):
        input_ids.append(prompt + answer)
        labels.append([IGNORE_INDEX] * len(prompt) + answer)
    return {"input_ids": input_ids, "labels": labels}


@dataclass
class MementoCollator:
    """Pads a batch on the right and adds position ids and the attention mask of the stage.

    Stage 1: a 2D padding mask (the model applies ordinary causal attention). Stage 2: the 4D memento
    mask, where the assistant response starts at the first labelled token.
    """

    pad_token_id: int
    stage: int
    delimiters: DelimiterIds | None = None
    mask_delimiters: bool = False
    attn_implementation: str = "sdpa"
    dtype: torch.dtype = torch.float32

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
        response_start = (labels != IGNORE_INDEX).long().argmax(-1)
        mask = memento_attention_mask(
            input_ids,
            self.delimiters,
            mask_delimiters=self.mask_delimiters,
            response_start=response_start,
            padding_mask=padding,
        )
        batch["attention_mask"] = to_model_mask(mask, self.attn_implementation, self.dtype)
        return batch
