"""Which failures are worth another attempt, how long to wait, and what the caller finally sees.

Transient failures (429, 5xx, 408/409, timeouts, connection errors, an unreadable 200 body) are retried
with jittered exponential backoff, or after exactly the wait the server asked for, up to the attempt
cap; then the caller gets :class:`RetriesExhausted`. Anything else the server refuses becomes
:class:`RequestRejected` at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from openmementos.llm.errors import LLMError, RequestRejected, RetriesExhausted, short_detail
from openmementos.llm.limits import retry_after_seconds

T = TypeVar("T")
_RETRYABLE_CLIENT_STATUSES = {408, 409}


class MalformedCompletion(Exception):
    """A 200 answer whose body is not a usable chat completion (truncated, not JSON, no choices)."""


def transient_reason(exc: BaseException) -> str | None:
    """A short tag for a failure worth retrying (``rate_limited``, ``server_error``, ``timeout``,
    ``connection``, ``malformed``), or None when retrying cannot help."""
    if isinstance(exc, openai.RateLimitError):
        return "rate_limited"
    if isinstance(exc, openai.APITimeoutError | TimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection"
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code >= 500 or exc.status_code in _RETRYABLE_CLIENT_STATUSES:
            return "server_error"
        return None
    if isinstance(exc, MalformedCompletion):
        return "malformed"
    return None


def server_wait_hint(exc: BaseException | None) -> float | None:
    """The wait the server asked for in the headers of a failed response, if any."""
    if isinstance(exc, openai.APIStatusError):
        return retry_after_seconds(exc.response.headers)
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """At most ``max_attempts`` attempts; between them the server's ``retry-after`` (plus a little
    jitter) when it gave one, else exponential backoff from ``initial_s`` with jitter, capped at
    ``max_s``."""

    max_attempts: int
    initial_s: float
    max_s: float

    def delay(self, exc: BaseException | None, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt, which failed with ``exc``."""
        hint = server_wait_hint(exc)
        if hint is not None:
            return min(self.max_s, hint * random.uniform(1.0, 1.2))
        return min(self.max_s, self.initial_s * 2 ** (failures - 1) + random.uniform(0, self.initial_s))

    async def call(self, attempt: Callable[[], Awaitable[T]], *, on_retry: Callable[[str], None]) -> T:
        """``attempt()`` until it succeeds, fails for good, or the attempts run out (the last failure is
        raised). ``on_retry(reason)`` is called before each wait.

        The first attempt runs bare: nearly every request succeeds at once, and tenacity's per-call
        bookkeeping would cost a fifth of the engine's CPU time at a thousand requests per second.
        After a transient failure, tenacity runs the remaining attempts.
        """
        try:
            return await attempt()
        except Exception as exc:
            reason = transient_reason(exc)
            if reason is None or self.max_attempts == 1:
                raise
            first_failure = exc
        on_retry(reason)
        await asyncio.sleep(self.delay(first_failure, 1))

        def before_sleep(state: RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome is not None else None
            on_retry((transient_reason(exc) if exc is not None else None) or "unknown")

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_attempts - 1),
            wait=_AfterFirstFailure(self),
            retry=retry_if_exception(lambda exc: transient_reason(exc) is not None),
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt)


class _AfterFirstFailure(wait_base):
    """tenacity's view of :meth:`RetryPolicy.delay` for a call whose first attempt already failed."""

    def __init__(self, policy: RetryPolicy) -> None:
        self._policy = policy

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        return self._policy.delay(exc, retry_state.attempt_number + 1)


def server_message(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"]
    if isinstance(exc, openai.APIStatusError):
        return exc.response.text or type(exc).__name__
    return str(exc) or type(exc).__name__


def as_llm_error(exc: BaseException, *, attempts: int, secrets: Iterable[str | None]) -> BaseException:
    """The typed, redacted error to raise for ``exc``; exceptions that are not API failures (our own
    bugs, cancellation) are returned unchanged."""
    if isinstance(exc, LLMError):
        return exc
    reason = transient_reason(exc)
    if reason is None and not isinstance(exc, openai.APIStatusError):
        return exc
    detail = short_detail(server_message(exc), secrets)
    status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
    if reason is not None:
        return RetriesExhausted(reason=reason, attempts=attempts, last_status=status, detail=detail)
    assert isinstance(exc, openai.APIStatusError)
    return RequestRejected(status=exc.status_code, detail=detail)
