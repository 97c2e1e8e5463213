"""The shared LLM engine: OpenAI-compatible chat completions, paid for once.

Used by ``annotate`` (the memento recipe) and by the ``llm`` boundary scorer of ``segment``.

* :class:`ChatRequest` / :class:`ChatResult`: what goes in and comes out.
* :class:`LLMEngine`: live requests (concurrency, rate limits, retries, several replicas);
  :func:`relax_gc` tunes the garbage collector of a process that runs one at high rates.
* :class:`BatchEngine`: the same ``complete()`` through the OpenAI Batch API (half price, hours).
* :class:`ResponseCache`: the persistent answer store both engines share; :class:`PriceTable`: costs.
* :func:`extract_json`: tolerant parsing of JSON answers.
* :mod:`openmementos.llm.runner`: one engine on a background event loop, streaming a stage's rows
  through it in input order (used by both stages' shard processors).

Names are exported lazily: importing a light module such as ``openmementos.llm.errors`` does not pull in
the openai client stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from openmementos.lazy import lazy_exports

_EXPORTS = {
    "BatchEngine": "batch",
    "CachedAnswer": "cache",
    "ResponseCache": "cache",
    "ChatCompleter": "completer",
    "EngineStats": "completer",
    "LLMEngine": "engine",
    "relax_gc": "engine",
    "BatchItemFailed": "errors",
    "ConfigurationError": "errors",
    "LLMError": "errors",
    "MalformedAnswer": "errors",
    "RequestRejected": "errors",
    "RetriesExhausted": "errors",
    "redact": "errors",
    "extract_json": "parsing",
    "ModelPrice": "pricing",
    "PriceTable": "pricing",
    "ChatRequest": "request",
    "ChatResult": "request",
    "LLMSettings": "settings",
}
__all__ = [
    "BatchEngine",
    "BatchItemFailed",
    "CachedAnswer",
    "ChatCompleter",
    "ChatRequest",
    "ChatResult",
    "ConfigurationError",
    "EngineStats",
    "LLMEngine",
    "LLMError",
    "LLMSettings",
    "MalformedAnswer",
    "ModelPrice",
    "PriceTable",
    "RequestRejected",
    "ResponseCache",
    "RetriesExhausted",
    "extract_json",
    "redact",
    "relax_gc",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)


if TYPE_CHECKING:
    from openmementos.llm.batch import BatchEngine
    from openmementos.llm.cache import CachedAnswer, ResponseCache
    from openmementos.llm.completer import ChatCompleter, EngineStats
    from openmementos.llm.engine import LLMEngine, relax_gc
    from openmementos.llm.errors import (
        BatchItemFailed,
        ConfigurationError,
        LLMError,
        MalformedAnswer,
        RequestRejected,
        RetriesExhausted,
        redact,
    )
    from openmementos.llm.parsing import extract_json
    from openmementos.llm.pricing import ModelPrice, PriceTable
    from openmementos.llm.request import ChatRequest, ChatResult
    from openmementos.llm.settings import LLMSettings
