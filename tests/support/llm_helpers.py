"""Shared helpers for the LLM engine tests (tests/test_llm_*.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from openmementos.llm import ChatCompleter, ChatRequest, ChatResult, LLMSettings
from support.openai_standin import messages_hash

T = TypeVar("T")

TEST_KEY = "sk-test-not-a-real-key"


def fast_settings(*base_urls: str, **overrides: Any) -> LLMSettings:
    """Settings with test-sized backoffs and timeouts."""
    values: dict[str, Any] = {
        "base_urls": base_urls,
        "api_key": TEST_KEY,
        "concurrency": 8,
        "timeout_s": 5.0,
        "max_attempts": 4,
        "backoff_initial_s": 0.01,
        "backoff_max_s": 1.0,
    }
    values.update(overrides)
    return LLMSettings(**values)


def questions(count: int, prefix: str = "q", model: str = "gpt-4o-mini") -> list[ChatRequest]:
    return [ChatRequest(model=model, messages=[{"role": "user", "content": f"{prefix} {i}"}]) for i in range(count)]


def hash_of(request: ChatRequest) -> str:
    """The stand-in's identity of a request (to compare with its counters)."""
    return messages_hash(request.messages)


async def complete_all(engine: ChatCompleter, requests: Sequence[ChatRequest]) -> list[ChatResult]:
    return list(await asyncio.gather(*(engine.complete(request) for request in requests)))


def run(coroutine: Awaitable[T]) -> T:
    return asyncio.run(coroutine)  # type: ignore[arg-type]
