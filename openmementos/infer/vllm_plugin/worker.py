"""Worker side of the plugin: compact the KV cache and address it physically, positions unchanged.

Patched methods (vLLM 0.32, `vllm.v1.worker.gpu_model_runner.GPUModelRunner`, which `CPUModelRunner`
extends), both no-ops when the step carries no `StepEvictions`:

* `_update_states`: before vLLM appends this step's new pages, apply the step's compactions: copy the
  KV entries that slide down (every layer, keys and values; `PageLayout` finds where they live) and
  cut the request's page list to the pages it keeps, both in the cached request state and in the
  persistent batch's block table.
* `_prepare_inputs`: vLLM computes positions as `num_computed_tokens + i`, which stay the *original*
  positions (RoPE runs on over the gaps); the KV length the attention reads (`seq_lens`, its CPU upper
  bound, hence `max_seq_len`) and the slots new KV is written to (`slot_mapping`) are recomputed from
  the physical position `position - offset`.

Internals relied on: `GPUModelRunner.kv_caches/requests/input_batch/positions/seq_lens/
optimistic_seq_lens_cpu/query_start_loc/kv_cache_config/compilation_config.static_forward_context`
(the attention layer's `impl.do_kv_cache_update/num_kv_heads/head_size` and `kv_cache`),
`InputBatch.req_ids/req_id_to_index/num_reqs/block_table`, `BlockTable.block_table/num_blocks_per_row/
compute_slot_mapping`, `CachedRequestState.block_ids`.
"""

from __future__ import annotations

import numpy as np
import torch

from openmementos.infer.vllm_plugin.engine import STEP_ATTR, SlotCompaction, _wraps

_LAYOUT_ATTR = "_openmementos_page_layout"


def install() -> None:
    """Patch the V1 model runner class (idempotent)."""
    from vllm.v1.worker.gpu_model_runner import GPUModelRunner

    if getattr(GPUModelRunner._prepare_inputs, "__openmementos_original__", None) is not None:
        return

    @_wraps(GPUModelRunner, "_update_states")
    def _update_states(original, self, scheduler_output):
        step = getattr(scheduler_output, STEP_ATTR, None)
        if step is not None and step.compactions:
            caches = _distinct_caches(self.kv_caches)
            for req_id, compactions in step.compactions.items():
                for compaction in compactions:
                    _apply_compaction(self, caches, req_id, compaction)
        return original(self, scheduler_output)

    @_wraps(GPUModelRunner, "_prepare_inputs")
    def _prepare_inputs(original, self, scheduler_output, num_scheduled_tokens):
        result = original(self, scheduler_output, num_scheduled_tokens)
        step = getattr(scheduler_output, STEP_ATTR, None)
        if step is not None and step.kv_offsets:
            _address_physically(self, step.kv_offsets, num_scheduled_tokens)
        return result


def _distinct_caches(kv_caches: list[torch.Tensor]) -> list[torch.Tensor]:
    """One view per storage: layers sharing a KV cache must be compacted once, not twice."""
    seen: set[int] = set()
    distinct = []
    for cache in kv_caches:
        if cache.data_ptr() not in seen:
            seen.add(cache.data_ptr())
            distinct.append(cache)
    return distinct


class PageLayout:
    """Where each of a token slot's KV elements lives in a page, learnt from the backend's own KV write.

    vLLM 0.32 hands every layer a `[blocks, heads, tokens, channels]` cache view, but what a backend
    stores at `[:, :, n, :]` is its own business: GPU backends keep a token's key and value side by side
    along `channels`, the CPU backend stores a page's keys in an ISA-specific tiling followed by its
    values. So the plugin writes probe pages with the backend's `do_kv_cache_update` (base-256 digits of
    each element's token and index, exact even in bfloat16) and records, for every slot of a page and
    every element of its key and value, the `(head, token, channel)` coordinates the element landed at.
    A move then copies exactly those elements, whatever the layout.
    """

    def __init__(self, runner) -> None:
        layer_name = runner.kv_cache_config.kv_cache_groups[0].layer_names[0]
        layer = runner.compilation_config.static_forward_context[layer_name]
        impl, cache = layer.impl, layer.kv_cache
        if getattr(type(impl), "do_kv_cache_update", None) is None:
            raise RuntimeError(
                f"openmementos: the {type(impl).__name__} attention backend writes its KV inside the forward "
                "pass; block eviction needs a backend with a separate KV write (CPU, FlashAttention, Triton, "
                "FlashInfer, FlexAttention)"
            )
        tokens = cache.shape[2]
        kv_heads, head_size = impl.num_kv_heads, impl.head_size
        elements = kv_heads * head_size
        page = _scratch_page(cache)
        slots = torch.arange(tokens, device=cache.device)
        token_ids = torch.arange(tokens, device=cache.device).view(-1, 1, 1).expand(-1, kv_heads, head_size)
        element_ids = torch.arange(elements, device=cache.device).view(1, kv_heads, head_size).expand(tokens, -1, -1)

        def digit(ids: torch.Tensor, place: int, *, sign_values: bool = False) -> torch.Tensor:
            """Write base-256 digit `place` of `ids` (plus one, so 0 means unwritten) as keys and values."""
            key = (ids // 256**place % 256 + 1).to(cache.dtype).contiguous()
            value = -key if sign_values else key
            page.zero_()
            impl.do_kv_cache_update(layer, key, value, page, slots)
            return page[0].to(torch.float32, copy=True)

        token_low = digit(token_ids, 0, sign_values=True)  # negative where a value landed
        written = token_low != 0
        is_value = (token_low[written] < 0).long()
        token = token_low[written].abs().long() - 1 + (digit(token_ids, 1)[written].long() - 1) * 256
        element = digit(element_ids, 0)[written].long() - 1 + (digit(element_ids, 1)[written].long() - 1) * 256
        element = element + is_value * elements
        if token.numel() != tokens * 2 * elements:
            raise RuntimeError(
                f"openmementos: cannot map the {type(impl).__name__} KV page layout "
                f"({token.numel()} elements written for {tokens} tokens of {2 * elements})"
            )
        order = torch.argsort(token * 2 * elements + element)
        self.tokens_per_page = tokens
        self.coordinates = written.nonzero()[order].view(tokens, 2 * elements, 3)  # (head, token, channel)

    def move(self, cache: torch.Tensor, src_slots: list[int], dst_slots: list[int]) -> None:
        """Copy the KV of slots `src_slots` to `dst_slots` (all sources are read before any write)."""
        src = torch.tensor(src_slots, device=cache.device)
        dst = torch.tensor(dst_slots, device=cache.device)
        pages = self.tokens_per_page
        s, d = self.coordinates[src % pages], self.coordinates[dst % pages]
        values = cache[(src // pages)[:, None], s[..., 0], s[..., 1], s[..., 2]]
        cache[(dst // pages)[:, None], d[..., 0], d[..., 1], d[..., 2]] = values


def _scratch_page(cache: torch.Tensor) -> torch.Tensor:
    """A zeroed one-page tensor shaped like a page of `cache`, its dimensions in the same memory order."""
    order = sorted(range(cache.dim()), key=lambda d: -cache.stride(d))
    shape = [1 if d == 0 else cache.shape[d] for d in order]
    inverse = [order.index(d) for d in range(cache.dim())]
    return torch.zeros(shape, dtype=cache.dtype, device=cache.device).permute(inverse)


def _apply_compaction(runner, caches: list[torch.Tensor], req_id: str, compaction: SlotCompaction) -> None:
    if compaction.src_slots:
        layout = getattr(runner, _LAYOUT_ATTR, None)
        if layout is None:
            layout = PageLayout(runner)
            setattr(runner, _LAYOUT_ATTR, layout)
        for cache in caches:
            layout.move(cache, compaction.src_slots, compaction.dst_slots)
    state = runner.requests[req_id]
    del state.block_ids[0][compaction.blocks_kept :]
    row = runner.input_batch.req_id_to_index.get(req_id)
    if row is not None:
        table = runner.input_batch.block_table[0]
        table.block_table.np[row, compaction.blocks_kept : table.num_blocks_per_row[row]] = 0
        table.num_blocks_per_row[row] = min(table.num_blocks_per_row[row], compaction.blocks_kept)


def _address_physically(runner, kv_offsets: dict[str, int], num_scheduled_tokens: np.ndarray) -> None:
    num_reqs = runner.input_batch.num_reqs
    offsets = np.array([kv_offsets.get(req_id, 0) for req_id in runner.input_batch.req_ids[:num_reqs]])
    if not offsets.any():
        return
    num_tokens = int(num_scheduled_tokens.sum())
    per_request = torch.from_numpy(offsets)
    runner.seq_lens[:num_reqs] -= per_request.to(runner.seq_lens.device, runner.seq_lens.dtype)
    runner.optimistic_seq_lens_cpu[:num_reqs] -= per_request.to(runner.optimistic_seq_lens_cpu.dtype)
    per_token = torch.from_numpy(np.repeat(offsets, num_scheduled_tokens)).to(runner.positions.device)
    physical = runner.positions[:num_tokens] - per_token
    runner.input_batch.block_table.compute_slot_mapping(num_reqs, runner.query_start_loc.gpu[: num_reqs + 1], physical)
