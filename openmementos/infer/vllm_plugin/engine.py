"""Engine-core side of the plugin: apply evictions in the scheduler and keep vLLM's KV accounting physical.

Patched methods (vLLM 0.32, `vllm.v1.core`), each a thin wrapper that is a no-op for requests without
eviction state:

* `Scheduler.add_request`: attach a `RequestEvictionState` to requests the frontend resolved.
* `Scheduler.schedule`: before scheduling, apply the eviction of every running request whose closing
  `<|summary_end|>` was computed in the previous step: drop the evicted tokens from the request's
  physical layout, return the pages that now hold nothing to the block pool at once, and plan the slot
  moves that compact the partly evicted page(s); after scheduling, attach the moves and every
  scheduled request's slot offset to the `SchedulerOutput` for the workers.
* `Scheduler._reserve_prefill_lookahead`: end every prefill chunk at a closing `<|summary_end|>`, so a
  request that recomputes after a preemption evicts exactly where it did the first time.
* `Scheduler._preempt_request` / `Scheduler._free_request`: reset the state (its KV is gone) / report
  the request's figures in `kv_transfer_params["openmementos"]`.
* `KVCacheManager.allocate_slots`: count the request's *physical* tokens (computed minus evicted), so
  pages are allocated for the KV it really holds.
* `KVCacheManager.get_computed_blocks` / `KVCacheCoordinator.cache_blocks`: prefix-cache hits and
  hashes stop at the prompt for evicting requests (generated pages are compacted in place, so their
  content no longer matches their hash); the prompt's pages are shared as usual.

Internals relied on: `Request.num_computed_tokens/num_prompt_tokens/all_token_ids/sampling_params`,
`Scheduler.running/requests/kv_cache_manager/kv_cache_config`, the single full-attention manager's
`req_to_blocks` list and `block_pool.free_blocks`, and `SchedulerOutput.num_scheduled_tokens/preempted_req_ids`.
"""

from __future__ import annotations

import functools
import logging
from contextlib import contextmanager
from dataclasses import dataclass, field

from openmementos.infer.vllm_plugin.core import (
    REPORT_KEY,
    RequestEvictionState,
    ResolvedEviction,
    closings,
    cut_at_closing,
    plan_eviction,
)

logger = logging.getLogger("vllm.openmementos")

STATE_ATTR = "openmementos_eviction"
"""Attribute of vLLM's `Request` holding its `RequestEvictionState`."""
STEP_ATTR = "openmementos_step"
"""Attribute of `SchedulerOutput` holding the step's `StepEvictions` (None when nothing to do)."""
PROBLEM_ATTR = "openmementos_problem"
"""Attribute of the `Scheduler`: why this engine cannot evict (None when it can)."""
_ANNOUNCED_ATTR = "openmementos_announced"


@dataclass(frozen=True)
class SlotCompaction:
    """One eviction as the workers apply it: copy KV slots, then keep only the first `blocks_kept` pages."""

    blocks_kept: int
    src_slots: list[int]
    dst_slots: list[int]


@dataclass
class StepEvictions:
    """What the workers need this step: slot offsets of scheduled requests, and compactions to apply first."""

    kv_offsets: dict[str, int] = field(default_factory=dict)
    compactions: dict[str, list[SlotCompaction]] = field(default_factory=dict)


def state_of(request) -> RequestEvictionState | None:
    return getattr(request, STATE_ATTR, None)


def kv_layout_problem(kv_cache_config) -> str | None:
    """Why eviction cannot run on this KV cache layout (None when it can)."""
    from vllm.v1.kv_cache_interface import FullAttentionSpec

    groups = kv_cache_config.kv_cache_groups
    if len(groups) != 1 or type(groups[0].kv_cache_spec) is not FullAttentionSpec:
        kinds = sorted({type(g.kv_cache_spec).__name__ for g in groups})
        return (
            f"block eviction needs one full-attention KV cache group; this model has {len(groups)} ({kinds}): "
            "sliding-window, hybrid and MLA models are not supported"
        )
    return None


def _wraps(cls, name: str):
    """Decorator: replace `cls.name` by the decorated function, which receives the original first."""

    def install(wrapper):
        original = getattr(cls, name)

        @functools.wraps(original)
        def patched(self, *args, **kwargs):
            return wrapper(original, self, *args, **kwargs)

        patched.__openmementos_original__ = original
        setattr(cls, name, patched)
        return wrapper

    return install


def install() -> None:
    """Patch the scheduler and KV cache manager classes (idempotent)."""
    from vllm.v1.core.kv_cache_coordinator import KVCacheCoordinator
    from vllm.v1.core.kv_cache_manager import KVCacheManager
    from vllm.v1.core.sched.scheduler import Scheduler

    if getattr(Scheduler.schedule, "__openmementos_original__", None) is not None:
        return

    @_wraps(Scheduler, "__init__")
    def _init(original, self, *args, **kwargs):
        original(self, *args, **kwargs)
        problem = kv_layout_problem(self.kv_cache_config)
        setattr(self, PROBLEM_ATTR, problem)
        if problem:
            logger.warning("openmementos: %s; requests asking for eviction will be aborted", problem)

    @_wraps(Scheduler, "add_request")
    def _add_request(original, self, request):
        settings = ResolvedEviction.from_extra_args(request.sampling_params and request.sampling_params.extra_args)
        if settings is not None:
            problem = getattr(self, PROBLEM_ATTR, None)
            if problem:
                logger.error("openmementos: aborting request %s: %s", request.request_id, problem)
                request.abort_immediately = True
            else:
                setattr(request, STATE_ATTR, RequestEvictionState(settings, response_start=request.num_prompt_tokens))
                if not getattr(self, _ANNOUNCED_ATTR, False):
                    setattr(self, _ANNOUNCED_ATTR, True)
                    logger.info(
                        "openmementos: requests with memento_evict drop finished blocks from the KV cache; "
                        "prefix caching covers their prompts only (their generated pages change in place)"
                    )
        return original(self, request)

    @_wraps(Scheduler, "schedule")
    def _schedule(original, self, *args, **kwargs):
        compactions: dict[str, list[SlotCompaction]] = {}
        for request in self.running:
            state = state_of(request)
            if state is not None and request.num_computed_tokens > state.scanned:
                done = _apply_evictions(self, request, state)
                if done:
                    compactions[request.request_id] = done
        output = original(self, *args, **kwargs)
        preempted = output.preempted_req_ids or set()
        step = StepEvictions(
            kv_offsets={
                req_id: state.offset
                for req_id in output.num_scheduled_tokens
                if (state := state_of(self.requests[req_id])) is not None and state.offset
            },
            compactions={req_id: c for req_id, c in compactions.items() if req_id not in preempted},
        )
        setattr(output, STEP_ATTR, step if step.kv_offsets or step.compactions else None)
        return output

    @_wraps(Scheduler, "_reserve_prefill_lookahead")
    def _reserve_prefill_lookahead(original, self, request, num_computed_tokens, num_new_tokens):
        num_new_tokens = original(self, request, num_computed_tokens, num_new_tokens)
        state = state_of(request)
        if state is None or num_new_tokens <= 1:
            return num_new_tokens
        return cut_at_closing(
            request.all_token_ids,
            num_computed_tokens,
            num_new_tokens,
            state.settings.delimiters.summary_end,
            state.response_start,
        )

    @_wraps(Scheduler, "_preempt_request")
    def _preempt_request(original, self, request, *args, **kwargs):
        state = state_of(request)
        if state is not None:
            state.preempted(request.num_computed_tokens)
        return original(self, request, *args, **kwargs)

    @_wraps(Scheduler, "_free_request")
    def _free_request(original, self, request, *args, **kwargs):
        state = state_of(request)
        report = state.report(request.num_computed_tokens, self.block_size) if state is not None else None
        kv_params, *rest = original(self, request, *args, **kwargs)
        if report is not None:
            kv_params = {**(kv_params or {}), REPORT_KEY: report}
        return (kv_params, *rest)

    @_wraps(KVCacheManager, "allocate_slots")
    def _allocate_slots(original, self, request, *args, **kwargs):
        state = state_of(request)
        if state is None or not state.offset:
            return original(self, request, *args, **kwargs)
        with _physical_tokens(request, state.offset):
            return original(self, request, *args, **kwargs)

    @_wraps(KVCacheManager, "get_computed_blocks")
    def _get_computed_blocks(original, self, request):
        blocks, num_hit, *rest = original(self, request)
        if state_of(request) is None:
            return (blocks, num_hit, *rest)
        block_size = self.coordinator.single_type_managers[0].block_size
        limit = request.num_prompt_tokens // block_size * block_size
        if num_hit > limit:
            blocks, num_hit = self.truncate_computed_blocks(blocks, limit), limit
        return (blocks, num_hit, *rest)

    @_wraps(KVCacheCoordinator, "cache_blocks")
    def _cache_blocks(original, self, request, num_computed_tokens):
        if state_of(request) is not None:
            num_computed_tokens = min(num_computed_tokens, request.num_prompt_tokens)
        return original(self, request, num_computed_tokens)


@contextmanager
def _physical_tokens(request, offset: int):
    """Let the KV cache manager see the tokens the request holds, not the ones it has computed."""
    request.num_computed_tokens -= offset
    try:
        yield
    finally:
        request.num_computed_tokens += offset


def _apply_evictions(scheduler, request, state: RequestEvictionState) -> list[SlotCompaction]:
    """Apply every closing computed since the last scan; free emptied pages; plan the slot moves."""
    num_computed = request.num_computed_tokens
    delimiters = state.settings.delimiters
    token_ids = request.all_token_ids
    found = closings(token_ids, state.scanned, num_computed, delimiters.summary_end, state.response_start)
    state.scanned = num_computed
    if not found:
        return []
    computed = token_ids[:num_computed]
    (manager,) = scheduler.kv_cache_manager.coordinator.single_type_managers
    blocks = manager.req_to_blocks[request.request_id]
    block_size = manager.block_size
    done = []
    for closing in found:
        compaction = plan_eviction(
            computed,
            closing,
            delimiters,
            mask_delimiters=state.settings.mask_delimiters,
            response_start=state.response_start,
        )
        if compaction is None:
            continue
        if compaction.kv_tokens_before != state.kv_tokens(num_computed):
            raise RuntimeError(
                f"openmementos: request {request.request_id} holds {state.kv_tokens(num_computed)} KV entries "
                f"but the mask leaves {compaction.kv_tokens_before} before the eviction at {closing}"
            )

        def slot(index: int) -> int:
            return blocks[index // block_size].block_id * block_size + index % block_size

        src = [slot(i) for i in compaction.moves_from]
        dst = [slot(i) for i in compaction.moves_to]
        blocks_kept = -(-compaction.kv_tokens_after // block_size)
        emptied = blocks[blocks_kept:]
        del blocks[blocks_kept:]
        manager.block_pool.free_blocks(reversed(emptied))
        state.applied(compaction, len(blocks))
        done.append(SlotCompaction(blocks_kept, src, dst))
    return done
