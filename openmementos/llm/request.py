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

STRUCTURED_FORMS = ("json_schema", "json_object", "none")
"""How a request's JSON Schema is sent, strictest first: OpenAI's `json_schema` response format; the
`json_object` format with the schema attached (llama.cpp's server enforces it with a grammar); or no
response format at all (the prompt alone asks for JSON)."""


REASK_TEMPERATURE_STEP = 0.3
"""Re-ask k of the same thing goes out with seed k and the temperature raised by k steps (up to 1)."""


def varied_sampling(temperature: float, attempt: int) -> tuple[float, int | None]:
    """Temperature and seed of the `attempt`-th re-ask of one thing (0: the first ask, unvaried).

    A re-ask that repeated the failed request would get the same junk from a deterministic server, and
    the same cache entry from ours."""
    if attempt == 0:
        return temperature, None
    return min(temperature + REASK_TEMPERATURE_STEP * attempt, max(temperature, 1.0)), attempt


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

    def body(
        self, *, form: str = "json_schema", max_tokens_field: str = "max_tokens", system_in_user: bool = False
    ) -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions`` for this request.

        ``form`` is how the schema is sent (one of `STRUCTURED_FORMS`); ``max_tokens_field`` is
        ``max_completion_tokens`` for servers that refuse ``max_tokens``; ``system_in_user`` puts the
        system messages at the top of the first user turn (templates without a system role).
        """
        if form not in STRUCTURED_FORMS:
            raise ValueError(f"unknown structured-output form {form!r}; choose from {', '.join(STRUCTURED_FORMS)}")
        messages = system_folded(self.messages) if system_in_user else list(self.messages)
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body[max_tokens_field] = self.max_tokens
        if self.seed is not None:
            body["seed"] = self.seed
        if self.json_schema is not None and form == "json_schema":
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": dict(self.json_schema)},
            }
        elif self.json_schema is not None and form == "json_object":
            body["response_format"] = {"type": "json_object", "schema": dict(self.json_schema)}
        body.update(self.params)
        return body

    def estimated_tokens(self) -> int:
        """A cheap upper-side guess of the tokens this request consumes (for tokens-per-minute limits)."""
        chars = sum(len(str(message.get("content", ""))) for message in self.messages)
        return chars // 4 + 8 * len(self.messages) + (self.max_tokens or _DEFAULT_COMPLETION_BUDGET)


def system_folded(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The conversation without system messages: their text opens the first user turn instead."""
    system = "\n\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "system")
    rest = [dict(m) for m in messages if m.get("role") != "system"]
    if not system:
        return rest
    first_user = next((i for i, m in enumerate(rest) if m.get("role") == "user"), None)
    if first_user is None:
        return [{"role": "user", "content": system}, *rest]
    rest[first_user]["content"] = f"{system}\n\n{rest[first_user].get('content', '')}"
    return rest


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
    cached_prompt_tokens: int = 0
    """Of `prompt_tokens`, those the provider served from its prefix cache."""

    @property
    def cut_at_limit(self) -> bool:
        """The answer stopped at its token limit (``finish_reason`` "length"): it may end mid-way."""
        return self.finish_reason == "length"
