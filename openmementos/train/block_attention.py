"""Stage-2 memento attention without a sequence-by-sequence mask, as transformers attention functions.

The dense reference (`openmementos.train.attention.dense_mask`) costs `seq x seq` booleans per row (a
GiB at 32K tokens) and keeps SDPA off its fastest kernels. Its structure is simple, though: between
two consecutive evictions the visible set only grows causally. So a row splits into *segments*, each
ending at a `<|summary_end|>` that evicts a block; the queries of a segment see a fixed set of earlier
keys (the prompt, the delimiters and mementos so far: whatever is not evicted yet) plus the segment's
own tokens causally. Both implementations take the row's `visible_until` (the same function that drives
the evicting decoder) as the `memento_visible_until` model keyword, which transformers hands to every
attention layer:

* `memento_blocks`: pure PyTorch with autograd, on every device. Each segment is one SDPA call over
  its visible keys, gathered, and an evicted block's keys take no part in any later call. The call
  needs no mask at all: the segment's queries are preceded by one placeholder query per earlier key,
  which turns "all earlier keys, then causal" into plain causal attention that the flash kernels
  run; the placeholders' outputs are dropped (they receive no gradient). Sliding-window layers split
  long segments into window-sized query chunks, each with a `chunk x visible keys` mask that
  intersects the window with the memento rule (never `seq x seq`).
* `memento_flex`: `torch.nn.attention.flex_attention` with a `BlockMask` built from the same
  `visible_until` (and window), so fully hidden tiles are skipped. The GPU path: the local torch runs
  FlexAttention forward on CPU but refuses its backward there.

Without `memento_visible_until` (stage 1, evaluation of a plain model) both fall back to SDPA with the
model's ordinary causal mask. Register them with `register_memento_attention()` before loading a model
with `attn_implementation="memento_blocks"` or `"memento_flex"`.
"""

from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass

import torch
from torch.utils.weak import WeakIdKeyDictionary

from openmementos.train.attention import HIDDEN, NEVER

MEMENTO_KWARG = "memento_visible_until"
"""The model keyword that carries the `(batch, seq)` `visible_until` of a stage-2 batch (HIDDEN on padding)."""

BLOCKS = "memento_blocks"
FLEX = "memento_flex"
IMPLEMENTATIONS = (BLOCKS, FLEX)


@dataclass(frozen=True)
class QueryChunk:
    """Queries `start..stop-1` of one row attend to `keys` (positions), masked by `mask` if given.

    `mask` is `(stop - start, len(keys))`. Without one, every query sees the first `lead` keys and the
    rest (the chunk's own positions) causally.
    """

    start: int
    stop: int
    keys: torch.Tensor
    mask: torch.Tensor | None
    lead: int = 0


def row_chunks(until: torch.Tensor, window: int | None = None) -> list[QueryChunk]:
    """Split one row (`(seq,)` `visible_until`, padding at the end) into query chunks with their keys.

    Segments end where an eviction happens (right after each distinct finite `visible_until`); the
    static keys of a segment are the earlier tokens still visible at its first query, and stay visible
    through its last one. With a window, a segment is cut into chunks of at most `window` queries and
    each chunk gathers only keys inside the window of its first query.
    """
    until = until.cpu()
    real = until != HIDDEN
    length = int(real.sum())
    if not bool(real[:length].all()):
        raise ValueError("memento block attention needs right padding (padding tokens after the real ones)")
    until = until[:length]
    positions = torch.arange(length)
    evictions = torch.unique(until[until != NEVER])
    bounds = [0, *sorted({int(e) + 1 for e in evictions if 0 < int(e) + 1 < length}), length]
    chunks = []
    for seg_start, seg_stop in itertools.pairwise(bounds):
        static = positions[:seg_start][until[:seg_start] >= seg_start]
        step = window or (seg_stop - seg_start)
        for start in range(seg_start, seg_stop, step):
            stop = min(start + step, seg_stop)
            if window is None:
                own_start, visible_static = seg_start, static
            else:
                own_start, visible_static = max(seg_start, start - window + 1), static[static > start - window]
            keys = torch.cat([visible_static, torch.arange(own_start, stop)])
            if own_start == start and (window is None or (visible_static.numel() == 0 and stop - start <= window)):
                chunks.append(QueryChunk(start, stop, keys, None, lead=visible_static.numel()))
                continue
            query = torch.arange(start, stop).unsqueeze(-1)
            mask = keys <= query
            if window is not None:
                mask &= keys > query - window
            chunks.append(QueryChunk(start, stop, keys, mask))
    return chunks


class _PerBatchCache:
    """Work derived from one batch's `visible_until` tensor, shared by all layers (and recomputation).

    Keyed weakly on the tensor's identity, so it lives exactly as long as the batch does.
    """

    def __init__(self) -> None:
        self._items = WeakIdKeyDictionary()

    def get(self, until: torch.Tensor, key, build):
        per_tensor = self._items.setdefault(until, {})
        if key not in per_tensor:
            per_tensor[key] = build()
        return per_tensor[key]


_chunk_cache = _PerBatchCache()
_block_mask_cache = _PerBatchCache()


def _chunks_on(until: torch.Tensor, window: int | None, device: torch.device) -> list[list[QueryChunk]]:
    def on_device(chunk: QueryChunk) -> QueryChunk:
        mask = None if chunk.mask is None else chunk.mask.to(device)
        return dataclasses.replace(chunk, keys=chunk.keys.to(device), mask=mask)

    def build() -> list[list[QueryChunk]]:
        return [[on_device(chunk) for chunk in row_chunks(row, window)] for row in until]

    return _chunk_cache.get(until, (window, str(device)), build)


def memento_block_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """Memento attention as one SDPA call per query chunk over its gathered visible keys.

    Same contract as transformers' attention functions: `query` `(batch, heads, seq, dim)`, `key` and
    `value` `(batch, kv_heads, seq, dim)`; returns `(batch, seq, heads, dim)`. Outputs at padding
    positions are zero.
    """
    until = kwargs.pop(MEMENTO_KWARG, None)
    if until is None:
        return _ordinary_attention(module, query, key, value, attention_mask, dropout, scaling, sliding_window, kwargs)
    _check_whole_sequence(query, key, until)
    groups = query.shape[1] // key.shape[1]
    rows = []
    for row, chunks in enumerate(_chunks_on(until, sliding_window, query.device)):
        pieces = [
            _segment_attention(
                query[row : row + 1, :, chunk.start : chunk.stop],
                key[row : row + 1, :, chunk.keys],
                value[row : row + 1, :, chunk.keys],
                chunk,
                groups,
                dropout,
                scaling,
            )
            for chunk in chunks
        ]
        padding = query.shape[2] - (chunks[-1].stop if chunks else 0)
        if padding:
            pieces.append(query.new_zeros(1, query.shape[1], padding, value.shape[-1]))
        rows.append(torch.cat(pieces, dim=2))
    return torch.cat(rows).transpose(1, 2).contiguous(), None


def _segment_attention(
    query, key, value, chunk: QueryChunk, groups: int, dropout: float, scaling: float | None
) -> torch.Tensor:
    """One SDPA call on `(1, heads, ...)` tensors (4D: the CPU flash kernel takes nothing else).

    Without a mask, `chunk.lead` zero placeholder queries go first and attention is plainly causal.
    Grouped-query heads: the CPU kernel and the unmasked GPU kernels take `enable_gqa`; the masked GPU
    kernel (memory-efficient attention) does not, so there the gathered keys are repeated instead.
    """
    mask = chunk.mask
    gqa = groups > 1 and (query.device.type == "cpu" or mask is None)
    if groups > 1 and not gqa:
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    if chunk.lead:
        query = torch.cat([query.new_zeros(*query.shape[:2], chunk.lead, query.shape[-1]), query], dim=2)
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=mask, dropout_p=dropout, is_causal=mask is None, scale=scaling, enable_gqa=gqa
    )
    return output[:, :, chunk.lead :]


def memento_flex_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Memento attention through FlexAttention, with a `BlockMask` from `visible_until` (and the window).

    Dropout is not supported (as in transformers' FlexAttention path).
    """
    until = kwargs.pop(MEMENTO_KWARG, None)
    if until is None:
        return _ordinary_attention(module, query, key, value, attention_mask, dropout, scaling, sliding_window, kwargs)
    _check_whole_sequence(query, key, until)
    if dropout:
        raise ValueError("memento_flex attention has no dropout; set the model's attention_dropout to 0")
    if module.training and query.device.type == "cpu":
        raise ValueError("FlexAttention has no backward on CPU: train on CPU with attn_implementation='memento_blocks'")
    compiled = COMPILE_FLEX if COMPILE_FLEX is not None else query.device.type == "cuda"
    block_mask = _block_mask_cache.get(
        until,
        (sliding_window, str(query.device), compiled),
        lambda: memento_block_mask(until.to(query.device), sliding_window, compiled=compiled),
    )
    groups = query.shape[1] // key.shape[1]
    heads = query.shape[1]
    if groups > 1 and heads & (heads - 1):  # FlexAttention's GQA wants a power-of-two head count
        key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    output = _flex_kernel(compiled)(
        query, key, value, block_mask=block_mask, scale=scaling, enable_gqa=key.shape[1] != heads
    )
    return output.transpose(1, 2).contiguous(), None


COMPILE_FLEX: bool | None = None
"""Compile FlexAttention and its mask (None: on CUDA only; the eager kernel is a CPU reference)."""


def _flex_kernel(compiled: bool):
    from torch.nn.attention.flex_attention import flex_attention

    if not compiled:
        return flex_attention
    global _compiled_flex
    if _compiled_flex is None:
        _compiled_flex = torch.compile(flex_attention)  # shapes turn dynamic after the first new length
    return _compiled_flex


_compiled_flex = None


def memento_block_mask(until: torch.Tensor, window: int | None = None, *, compiled: bool = True):
    """The FlexAttention `BlockMask` of a `(batch, seq)` `visible_until`: the dense mask's rule, per tile."""
    from torch.nn.attention.flex_attention import create_block_mask

    def visible(batch, head, query, key):
        allowed = (key <= query) & (until[batch, key] >= query)
        return allowed & (key > query - window) if window is not None else allowed

    batch, length = until.shape
    return create_block_mask(visible, batch, None, length, length, device=until.device, _compile=compiled)


def register_memento_attention() -> None:
    """Make `memento_blocks` and `memento_flex` valid `attn_implementation` names (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(BLOCKS, memento_block_attention)
    AttentionInterface.register(FLEX, memento_flex_attention)
    # Without memento_visible_until the functions fall back to SDPA, so the model builds SDPA masks.
    AttentionMaskInterface.register(BLOCKS, sdpa_mask)
    AttentionMaskInterface.register(FLEX, sdpa_mask)


def _ordinary_attention(module, query, key, value, attention_mask, dropout, scaling, sliding_window, kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(
        module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, sliding_window=sliding_window,
        **kwargs,
    )  # fmt: skip


def _check_whole_sequence(query: torch.Tensor, key: torch.Tensor, until: torch.Tensor) -> None:
    if not (query.shape[2] == key.shape[2] == until.shape[-1]):
        raise ValueError(
            f"memento attention runs on whole training sequences ({until.shape[-1]} tokens), not on "
            f"{query.shape[2]} queries against {key.shape[2]} cached keys; decode with openmementos.infer.hf"
        )
