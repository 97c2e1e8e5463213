"""Frontend side of the plugin: resolve a request's opt-in and refuse what the engine cannot do.

Patched method (vLLM 0.32): `vllm.v1.engine.input_processor.InputProcessor.process_inputs`. After vLLM
has built the `EngineCoreRequest`, a request asking for eviction (`extra_args`/`vllm_xargs`
`memento_evict`, or the engine default `OPENMEMENTOS_VLLM_EVICT`) gets the delimiter ids of the served
tokenizer and its resolved `mask_delimiters` in `extra_args["openmementos"]`, which the engine core
reads. A request the engine cannot serve is refused here with an `EvictionRefused`, a `ValueError`
that vLLM's server answers with HTTP 400.
"""

from __future__ import annotations

from openmementos.infer.vllm_plugin.core import RESOLVED_ARG, ResolvedEviction, requested_eviction
from openmementos.infer.vllm_plugin.engine import _wraps
from openmementos.train.attention import DelimiterIds

_DELIMITERS_ATTR = "_openmementos_delimiters"


def config_problem(vllm_config) -> str | None:
    """Why this engine configuration cannot evict (None when it can)."""
    scheduler = vllm_config.scheduler_config
    if vllm_config.use_v2_model_runner:
        return "it patches vLLM's V1 model runner; start the engine with VLLM_USE_V2_MODEL_RUNNER=0"
    if scheduler.async_scheduling:
        return "it needs synchronous scheduling; start the engine with async_scheduling=False (--no-async-scheduling)"
    if vllm_config.speculative_config is not None:
        return "speculative decoding is not supported with block eviction"
    if vllm_config.kv_transfer_config is not None:
        return "KV connectors (disaggregated prefill, offloading) are not supported with block eviction"
    if vllm_config.parallel_config.pipeline_parallel_size > 1:
        return "pipeline parallelism is not supported with block eviction"
    if vllm_config.cache_config.cache_dtype != "auto":
        return f"a quantised KV cache ({vllm_config.cache_config.cache_dtype}) is not supported with block eviction"
    return None


def install() -> None:
    """Patch the input processor class (idempotent)."""
    from vllm.exceptions import VLLMValidationError
    from vllm.v1.engine.input_processor import InputProcessor

    class EvictionRefused(VLLMValidationError, ValueError):
        """A request asked for eviction this engine cannot do (a client error: HTTP 400)."""

        def __init__(self, message: str) -> None:
            super().__init__(message, parameter="memento_evict")

    if getattr(InputProcessor.process_inputs, "__openmementos_original__", None) is not None:
        return

    @_wraps(InputProcessor, "process_inputs")
    def _process_inputs(original, self, *args, **kwargs):
        request = original(self, *args, **kwargs)
        params = request.sampling_params
        if params is None:
            return request
        try:
            wanted = requested_eviction(params.extra_args)
            if not wanted.evict:
                return request
            problem = config_problem(self.vllm_config)
            if getattr(request, "resumable", False):
                problem = "streaming-input sessions (resumable requests) are not supported with block eviction"
            if problem:
                raise ValueError(f"block eviction is unavailable: {problem}")
            delimiters = _delimiters(self)
        except ValueError as error:
            raise EvictionRefused(str(error)) from error
        resolved = ResolvedEviction(delimiters, wanted.mask_delimiters)
        params.extra_args = {**(params.extra_args or {}), RESOLVED_ARG: resolved.to_extra_args()}
        return request


def _delimiters(processor) -> DelimiterIds:
    """The served tokenizer's delimiter ids, looked up once (ValueError if it lacks them)."""
    delimiters = getattr(processor, _DELIMITERS_ATTR, None)
    if delimiters is None:
        try:
            delimiters = DelimiterIds.from_tokenizer(processor.get_tokenizer())
        except ValueError as error:
            raise ValueError(f"this model is not a memento model: {error}") from error
        setattr(processor, _DELIMITERS_ATTR, delimiters)
    return delimiters
