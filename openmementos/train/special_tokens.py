"""Prepare a model and tokenizer for memento data: add the delimiters, initialise their embeddings.

Each new token starts from the mean embedding of words related to its role (SPEC 5) plus a little
noise, so the fresh tokens are neither random nor identical to each other. A word the tokenizer splits
into several pieces counts only when none of the token's words is a single token (then the mean of the
pieces is used); a tokenizer that knows none of the words falls back to the mean of the whole
vocabulary. A tokenizer without a chat template gets ChatML (`openmementos.chat.CHATML_TEMPLATE`):
its markers are added the same way (from the vocabulary mean) when missing, and the template is set
on the tokenizer, so the saved checkpoint carries the format it was trained in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openmementos.chat import CHATML_TEMPLATE
from openmementos.format import BLOCK_END, BLOCK_START, SUMMARY_END, SUMMARY_START

CHAT_START = "<|im_start|>"
CHAT_END = "<|im_end|>"

RELATED_WORDS: dict[str, tuple[str, ...]] = {
    BLOCK_START: ("block", "start", "begin", "section", "step"),
    BLOCK_END: ("block", "end", "finish", "section", "done"),
    SUMMARY_START: ("summary", "summarize", "brief", "recap", "overview"),
    SUMMARY_END: ("summary", "end", "finish", "done", "complete"),
    CHAT_START: (),
    CHAT_END: (),
}
"""The tokens `prepare_model_and_tokenizer` makes sure exist, with the words their embedding starts from."""

CHATML = (CHAT_START, CHAT_END)

NOISE_SCALE = 0.01
"""Standard deviation of the init noise, relative to the standard deviation of the existing embeddings."""


@dataclass(frozen=True)
class TokenInit:
    """How one new token's embedding was initialised (for logs and tests)."""

    token: str
    token_id: int
    source: str  # "words", "word pieces" or "vocabulary mean"
    pieces: tuple[int, ...]  # the token ids whose embeddings were averaged (empty for the vocabulary mean)


def prepare_model_and_tokenizer(model, tokenizer, *, seed: int = 0) -> list[TokenInit]:
    """Add the missing memento tokens (and ChatML, without a chat template) and initialise their rows.

    Idempotent: tokens already present as single tokens are left alone, so a stage-1 checkpoint passes
    through unchanged. Returns one `TokenInit` per added token.
    """
    from tokenizers import AddedToken

    wanted = list(RELATED_WORDS) if not tokenizer.chat_template else [t for t in RELATED_WORDS if t not in CHATML]
    if not tokenizer.chat_template:
        tokenizer.chat_template = CHATML_TEMPLATE
    missing = [token for token in wanted if not _is_single_token(tokenizer, token)]
    if not missing:
        return []
    # Word pieces are looked up before the new tokens exist, so they can never match them.
    plans = {token: _related_pieces(tokenizer, RELATED_WORDS[token]) for token in missing}
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in missing], special_tokens=True)
    needed_rows = max(tokenizer.convert_tokens_to_ids(missing)) + 1
    if needed_rows > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(needed_rows, mean_resizing=False)

    generator = torch.Generator().manual_seed(seed)
    inits = []
    matrices = [model.get_input_embeddings().weight]
    output = model.get_output_embeddings()
    if output is not None and output.weight.data_ptr() != matrices[0].data_ptr():
        matrices.append(output.weight)
    old_rows = torch.ones(matrices[0].shape[0], dtype=torch.bool)
    old_rows[tokenizer.convert_tokens_to_ids(missing)] = False
    for token in missing:
        token_id = tokenizer.convert_tokens_to_ids(token)
        source, pieces = plans[token]
        for weight in matrices:
            with torch.no_grad():
                existing = weight[old_rows]
                base = weight[list(pieces)].mean(0) if pieces else existing.mean(0)
                noise = torch.randn(weight.shape[1], generator=generator) * existing.std() * NOISE_SCALE
                weight[token_id] = base + noise.to(weight.dtype)
        inits.append(TokenInit(token, token_id, source, pieces))
    return inits


def _is_single_token(tokenizer, text: str) -> bool:
    return len(tokenizer.encode(text, add_special_tokens=False)) == 1


def _related_pieces(tokenizer, words: tuple[str, ...]) -> tuple[str, tuple[int, ...]]:
    """Token ids to average for a new token: single-token words first, else all words' pieces."""
    unknown = tokenizer.unk_token_id
    single, split = [], []
    for word in words:
        # BPE vocabularies usually hold the word with its leading space; take the shortest spelling.
        spellings = [tokenizer.encode(w, add_special_tokens=False) for w in (f" {word}", word)]
        spellings = [ids for ids in spellings if ids and unknown not in ids]
        if not spellings:
            continue
        ids = min(spellings, key=len)
        (single if len(ids) == 1 else split).extend(ids)
    if single:
        return "words", tuple(single)
    if split:
        return "word pieces", tuple(split)
    return "vocabulary mean", ()
