"""Memento attention: which earlier tokens each token may attend to.

Both the stage-2 training mask and the evicting decoder (`openmementos.infer.hf`) are derived from one
function, `visible_until`: for every token it gives the last query position allowed to attend to it.
Content tokens of block *k* are visible up to and including the `<|summary_end|>` that closes memento
*k* (that memento's KV is computed while its block is still visible) and to nothing after it. Every
other token stays visible forever. The training mask is `key <= query and visible_until[key] >= query`;
the decoder drops a cached entry as soon as `visible_until[key]` is behind the next position.

Block *k* is the one opened by the k-th `<|block_start|>` of the response. Its content runs up to the
first `<|block_end|>`, `<|summary_start|>` or `<|summary_end|>` after it, and the first
`<|summary_end|>` after its `<|block_start|>` that comes before the next `<|block_start|>` evicts it.
Malformed model output thus still gets a well-defined, identical treatment in training and decoding.

Layers with a sliding window (Olmo 3, Phi-3 with `sliding_window`, Gemma-style hybrids) see the
intersection: a key is visible to a query when the memento rule allows it AND it lies inside the window
(`key > query - window`, transformers' convention). `layer_windows` reads each layer's window from the
model config. The dense masks here are the reference; `openmementos.train.block_attention` computes
the same attention without ever building a sequence-by-sequence mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openmementos.format import DELIMITERS

NEVER = torch.iinfo(torch.int64).max
"""`visible_until` value of a token that is never evicted."""

HIDDEN = -1
"""`visible_until` value of a padding token: no query ever sees it."""


@dataclass(frozen=True)
class DelimiterIds:
    """Token ids of the four memento delimiters in one tokenizer."""

    block_start: int
    block_end: int
    summary_start: int
    summary_end: int

    @classmethod
    def from_tokenizer(cls, tokenizer) -> DelimiterIds:
        """Look the delimiters up; a clear error if the tokenizer was not prepared for mementos."""
        ids = []
        for text in DELIMITERS:  # in the order of the fields
            token_ids = tokenizer.encode(text, add_special_tokens=False)
            if len(token_ids) != 1:
                raise ValueError(
                    f"the tokenizer does not have {text} as a single special token (it encodes to "
                    f"{len(token_ids)} tokens); prepare the model with `openmementos sft --stage 1` first"
                )
            ids.append(token_ids[0])
        return cls(*ids)


def visible_until(
    input_ids: torch.Tensor,
    delimiters: DelimiterIds,
    *,
    mask_delimiters: bool = False,
    response_start: int | torch.Tensor = 0,
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """For each token, the last query position that may attend to it (`NEVER` if not evicted).

    `input_ids` is `(seq,)` or `(batch, seq)`. Delimiters before `response_start` (the first token of
    the assistant response; an int or a `(batch,)` tensor) are ordinary text. With `mask_delimiters`
    the `<|block_start|>` and `<|block_end|>` of a block are evicted together with its content.
    `padding_mask` (1 for real tokens) marks padding `HIDDEN`.
    Vectorised: a handful of cumulative sums and one scatter, no loop over tokens.
    """
    squeeze = input_ids.dim() == 1
    ids = input_ids.unsqueeze(0) if squeeze else input_ids
    batch, length = ids.shape
    device = ids.device
    positions = torch.arange(length, device=device).expand(batch, length)
    start = torch.as_tensor(response_start, device=device).reshape(-1, 1)
    in_response = positions >= start

    is_block_start = (ids == delimiters.block_start) & in_response
    is_block_end = (ids == delimiters.block_end) & in_response
    is_summary_end = (ids == delimiters.summary_end) & in_response
    ends_content = is_block_end | ((ids == delimiters.summary_start) & in_response) | is_summary_end

    # Block number of each token: how many <|block_start|> came at or before it (0 = before any block).
    block = is_block_start.long().cumsum(-1)
    last_open = torch.where(is_block_start, positions, -1).cummax(-1).values
    opened = last_open >= 0
    # A token is content if no content terminator occurred between its block's opening and itself.
    terminators = ends_content.long().cumsum(-1)
    terminators_at_open = terminators.gather(-1, last_open.clamp(min=0))
    is_content = opened & (positions > last_open) & (terminators == terminators_at_open)
    evicted = is_content
    if mask_delimiters:
        closes_content = is_block_end & (terminators == terminators_at_open + 1)
        evicted = evicted | is_block_start | (opened & closes_content)

    # Position of the first <|summary_end|> of each block (NEVER while it has none).
    evict_at = torch.full((batch, length + 1), NEVER, dtype=torch.long, device=device)
    closing_block = torch.where(is_summary_end & opened, block, 0)
    closing_position = torch.where(is_summary_end & opened, positions, NEVER)
    evict_at.scatter_reduce_(-1, closing_block, closing_position, reduce="amin")
    evict_at[:, 0] = NEVER
    until = torch.where(evicted, evict_at.gather(-1, block), NEVER)
    if padding_mask is not None:
        until = until.masked_fill(~padding_mask.reshape(until.shape).bool(), HIDDEN)
    return until.squeeze(0) if squeeze else until


def visibility(
    query_positions: torch.Tensor,
    key_positions: torch.Tensor,
    key_visible_until: torch.Tensor,
    window: int | None = None,
) -> torch.Tensor:
    """Boolean `(..., queries, keys)`: causal, the key not yet evicted at the query, and inside the window."""
    query = query_positions.unsqueeze(-1)
    key = key_positions.unsqueeze(-2)
    visible = (key <= query) & (key_visible_until.unsqueeze(-2) >= query)
    return visible & (key > query - window) if window is not None else visible


def layer_windows(config) -> dict[str, int | None]:
    """The sliding window of each attention layer type of a model (None: full attention)."""
    return dict(_layers(config))


def per_layer_windows(config) -> list[int | None]:
    """The sliding window of each decoder layer, in order (None: full attention)."""
    return [window for _, window in _layers(config)]


def _layers(config) -> list[tuple[str, int | None]]:
    """(layer type, window) per decoder layer, read with transformers' own per-layer logic.

    `layer_types` where the config has them, else `sliding_window` on every layer (Phi-3, Mistral).
    Memento attention supports full and sliding-window layers.
    """
    from transformers.cache_utils import get_layer_types_and_kwargs

    layer_types, layer_kwargs = get_layer_types_and_kwargs(config.get_text_config(decoder=True))
    layers = []
    for layer_type, kwargs in zip(layer_types, layer_kwargs, strict=True):
        if layer_type not in ("full_attention", "sliding_attention"):
            raise ValueError(
                f"memento attention supports full and sliding-window attention layers, not {layer_type!r} "
                f"({type(config).__name__})"
            )
        layers.append((layer_type, kwargs.get("sliding_window") if layer_type == "sliding_attention" else None))
    return layers


def model_mask(
    per_window: dict[int | None, torch.Tensor], windows: dict[str, int | None], attn_implementation: str, dtype
) -> torch.Tensor | dict[str, torch.Tensor]:
    """What a model's `attention_mask` takes for boolean 4D masks computed per window.

    One mask when every layer has the same window; else the `{layer_type: mask}` mapping that models
    with mixed layers (Olmo 3, Qwen3 with sliding layers) accept in place of their own masks.
    """
    if len(set(windows.values())) == 1:
        return to_model_mask(per_window[next(iter(windows.values()))], attn_implementation, dtype)
    return {kind: to_model_mask(per_window[window], attn_implementation, dtype) for kind, window in windows.items()}


def memento_attention_mask(
    input_ids: torch.Tensor,
    delimiters: DelimiterIds,
    *,
    mask_delimiters: bool = False,
    response_start: int | torch.Tensor = 0,
    padding_mask: torch.Tensor | None = None,
    window: int | None = None,
) -> torch.Tensor:
    """Boolean stage-2 mask `(batch, 1, seq, seq)`, True where a query may attend to a key.

    Position ids stay `0..seq-1` (the original ones): eviction removes keys, it never shifts positions.
    `padding_mask` (`(batch, seq)`, 1 for real tokens) hides padding keys; `window` is a layer's
    sliding window.
    """
    squeeze = input_ids.dim() == 1
    ids = input_ids.unsqueeze(0) if squeeze else input_ids
    until = visible_until(
        ids, delimiters, mask_delimiters=mask_delimiters, response_start=response_start, padding_mask=padding_mask
    )
    return dense_mask(until, window)


def dense_mask(until: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """The reference `(batch, 1, seq, seq)` boolean mask of a `(batch, seq)` `visible_until`."""
    positions = torch.arange(until.shape[-1], device=until.device)
    return visibility(positions, positions, until, window).unsqueeze(1)


def to_model_mask(mask: torch.Tensor, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor:
    """Pack a boolean 4D mask into what the model's attention takes.

    SDPA takes the boolean mask as is (the smallest form); eager attention adds the mask to the scores,
    so it gets 0 where visible and the dtype's minimum elsewhere.
    """
    if attn_implementation == "sdpa":
        return mask
    if attn_implementation == "eager":
        zero = torch.zeros((), dtype=dtype, device=mask.device)
        return torch.where(mask, zero, torch.finfo(dtype).min)
    raise ValueError(
        f"memento attention needs a 4D mask, which attention implementation {attn_implementation!r} does not "
        "take here; load the model with attn_implementation='sdpa' or 'eager'"
    )
