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
"""

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
