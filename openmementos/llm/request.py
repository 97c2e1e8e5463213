"""What callers send to the engine (:class:`ChatRequest`) and what they get back (:class:`ChatResult`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_CACHE_KEY_VERSION = 1
_DEFAULT_COMPLETION_BUDGET = 1024
"""Tokens assumed for the answer, for rate limiting, when a request sets no max_tokens."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no whitespace: the same value always gives the same text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion to make. Immutable; two equal requests share one cache entry.

    ``json_schema`` (a JSON Schema object) asks for structured output where the server supports it;
    the answer text is returned either way and callers parse it tolerantly
    (:func:`openmementos.llm.extract_json`). ``params`` carries any other sampling parameter
    (``top_p``, ``stop``, ...) verbatim into the request body and into the cache key.
    """

    model: str
    messages: Sequence[Mapping[str, Any]]
    temperature: float | None = 0.0
    max_tokens: int | None = None
    json_schema: Mapping[str, Any] | None = None
    seed: int | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    _key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", tuple(dict(message) for message in self.messages))
        object.__setattr__(self, "params", dict(self.params))
        identity = {
            "v": _CACHE_KEY_VERSION,
            "model": self.model,
            "messages": self.messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "json_schema": self.json_schema,
            "seed": self.seed,
            "params": self.params,
        }
        object.__setattr__(self, "_key", hashlib.sha256(canonical_json(identity).encode()).hexdigest())

    def cache_key(self) -> str:
        """sha256 of model, messages, sampling parameters and schema; independent of endpoint and key."""
        return self._key

    def body(self, *, structured: bool = True, max_tokens_field: str = "max_tokens") -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions`` for this request.

        ``structured=False`` leaves out ``response_format`` (for servers that reject it);
        ``max_tokens_field`` is ``max_completion_tokens`` for servers that refuse ``max_tokens``.
        """
        body: dict[str, Any] = {"model": self.model, "messages": list(self.messages)}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body[max_tokens_field] = self.max_tokens
        if self.seed is not None:
            body["seed"] = self.seed
        if structured and self.json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": dict(self.json_schema)},
            }
        body.update(self.params)
        return body

    def estimated_tokens(self) -> int:
        """A cheap upper-side guess of the tokens this request consumes (for tokens-per-minute limits)."""
        chars = sum(len(str(message.get("content", ""))) for message in self.messages)
        return chars // 4 + 8 * len(self.messages) + (self.max_tokens or _DEFAULT_COMPLETION_BUDGET)


@dataclass(frozen=True)
class ChatResult:
    """The answer to a :class:`ChatRequest`.

    Token counts are those of the answer as it was paid for, also when it comes from the cache
    (``cached=True``: it cost nothing this time). ``attempts`` is the number of HTTP requests (or batch
    submissions) this call made, 0 for a cache hit.
    """

    text: str
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool
    attempts: int
    finish_reason: str | None = None
