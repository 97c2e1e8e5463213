"""What every engine shares: cache lookup, single-flight of identical requests, and accounting.

An engine subclasses :class:`CachingCompleter` and implements ``_fetch`` (get one fresh answer).
:meth:`CachingCompleter.complete` answers from the cache when it can; otherwise it runs ``_fetch``
once per distinct request, however many callers ask for it at the same time, and stores the answer
(committed) before any caller sees it. A failed request is never cached.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

from openmementos.llm.cache import CachedAnswer, ResponseCache
from openmementos.llm.pricing import PriceTable
from openmementos.llm.request import ChatRequest, ChatResult
from openmementos.llm.retry import MalformedCompletion


class ChatCompleter(Protocol):
    """The surface callers (``annotate``, the ``llm`` boundary scorer) program against."""

    stats: EngineStats

    async def complete(self, request: ChatRequest) -> ChatResult: ...

    async def close(self) -> None: ...


@dataclass
class EngineStats:
    """Live counters for progress bars and run summaries. Tokens and cost count fresh answers only."""

    in_flight: int = 0
    """Distinct requests being worked on now (on the wire, queued for a slot, backing off, or waiting in
    a batch)."""
    sending: int = 0
    """HTTP requests on the wire now (at most the concurrency)."""
    sent: int = 0
    """HTTP requests sent (retries included), or batch lines submitted."""
    answered: int = 0
    """Fresh answers received and stored."""
    cache_hits: int = 0
    """Answers served from the cache: no request sent."""
    coalesced: int = 0
    """Calls that joined an identical request already in flight."""
    failed: int = 0
    """Requests that ended in an error for the caller."""
    retries: Counter[str] = field(default_factory=Counter)
    """Retries by reason (rate_limited, server_error, timeout, connection, malformed, batch_item)."""
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    """Of `prompt_tokens`, those the provider served from its prefix cache (billed at the cached rate)."""
    completion_tokens: int = 0
    cost_usd: float = 0.0
    structured_output: dict[str, str] = field(default_factory=dict)
    """Endpoint -> the structured-output form it was last sent with (negotiated under ``auto``)."""
    notes: list[str] = field(default_factory=list)
    """What the engine learned about its endpoints and adapted to (each said once, in order)."""

    @property
    def queued(self) -> int:
        """Requests being worked on but not on the wire (waiting for a slot, a pause or a retry)."""
        return max(self.in_flight - self.sending, 0)

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)

    def status_line(self) -> str:
        """One short line, e.g. for a progress bar's description."""
        retries = sum(self.retries.values())
        return (
            f"sending {self.sending} | queued {self.queued} | sent {self.sent} | cached {self.cache_hits}"
            f" | retries {retries} | tokens {self.prompt_tokens:,} in ({self.cached_prompt_tokens:,} cached)"
            f" / {self.completion_tokens:,} out"
            f" | ${self.cost_usd:.4f}"
        )

    def to_dict(self) -> dict[str, Any]:
        """Every counter, as plain JSON-ready values."""
        return {
            **vars(self),
            "retries": dict(self.retries),
            "structured_output": dict(self.structured_output),
            "notes": list(self.notes),
        }


def answer_from_completion(data: Any, *, model: str, batch: bool = False) -> CachedAnswer:
    """The answer in a chat-completion object (parsed JSON); :class:`MalformedCompletion` if unusable."""
    try:
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details") or {}  # OpenAI and vLLM: {"cached_tokens": N}
        return CachedAnswer(
            text=text,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            finish_reason=choice.get("finish_reason"),
            model=model,
            batch=batch,
            cached_prompt_tokens=int(details.get("cached_tokens") or 0),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError) as exc:
        raise MalformedCompletion(f"not a usable chat completion ({type(exc).__name__})") from None


def answer_from_body(body: bytes, *, model: str) -> CachedAnswer:
    try:
        data = json.loads(body)
    except ValueError:
        raise MalformedCompletion(f"chat completion body is not JSON ({len(body)} bytes)") from None
    return answer_from_completion(data, model=model)


class _CommitGroup:
    """Answers that arrive in the same turn of the event loop are committed in one transaction, before
    any of their callers resumes: as safe as a commit per answer, at a fraction of its cost."""

    def __init__(self, cache: ResponseCache) -> None:
        self._cache = cache
        self._waiting: list[tuple[str, CachedAnswer, asyncio.Future[None]]] = []

    async def put(self, key: str, answer: CachedAnswer) -> None:
        loop = asyncio.get_running_loop()
        if not self._waiting:
            loop.call_soon(self._commit)
        committed = loop.create_future()
        self._waiting.append((key, answer, committed))
        await committed

    def _commit(self) -> None:
        waiting, self._waiting = self._waiting, []
        try:
            self._cache.put_many((key, answer) for key, answer, _ in waiting)
        except Exception as exc:
            for _, _, committed in waiting:
                if not committed.done():
                    committed.set_exception(exc)
            return
        for _, _, committed in waiting:
            if not committed.done():  # its caller may have been cancelled meanwhile; the answer is stored
                committed.set_result(None)


@dataclass
class _Flight:
    task: asyncio.Task[tuple[CachedAnswer, int]]
    waiters: int = 0


class CachingCompleter:
    """Base of the engines: cache, single-flight and accounting around an abstract ``_fetch``.

    ``cache`` is a :class:`ResponseCache` (the caller keeps ownership), a path (the engine opens and
    closes it) or None (no persistence).
    """

    max_tokens_override: int | None = None
    """When set, every request's answer budget (``--max-tokens``), applied before the cache lookup."""

    def __init__(self, cache: ResponseCache | str | Path | None, prices: PriceTable | None) -> None:
        self._owns_cache = cache is not None and not isinstance(cache, ResponseCache)
        self.cache = ResponseCache(cache) if isinstance(cache, str | Path) else cache
        self.prices = prices or PriceTable()
        self.stats = EngineStats()
        self._flights: dict[str, _Flight] = {}
        self._commits = _CommitGroup(self.cache) if self.cache is not None else None

    async def _fetch(self, request: ChatRequest) -> tuple[CachedAnswer, int]:
        """One fresh answer and the number of attempts it took."""
        raise NotImplementedError

    async def complete(self, request: ChatRequest) -> ChatResult:
        """The answer to ``request``: from the cache, from an identical request in flight, or fresh."""
        if self.max_tokens_override is not None and request.max_tokens != self.max_tokens_override:
            request = dataclasses.replace(request, max_tokens=self.max_tokens_override)
        key = request.cache_key()
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.stats.cache_hits += 1
            return self._result(hit, cached=True, attempts=0)
        flight = self._flights.get(key)
        leader = flight is None
        if flight is None:
            flight = _Flight(asyncio.create_task(self._fetch_and_store(key, request)))
            self._flights[key] = flight
            flight.task.add_done_callback(lambda _task: self._flights.pop(key, None))
        else:
            self.stats.coalesced += 1
        flight.waiters += 1
        try:
            answer, attempts = await asyncio.shield(flight.task)
        except asyncio.CancelledError:
            if flight.waiters == 1:  # the last one interested: stop the request
                flight.task.cancel()
            raise
        finally:
            flight.waiters -= 1
        return self._result(answer, cached=not leader, attempts=attempts if leader else 0)

    async def _fetch_and_store(self, key: str, request: ChatRequest) -> tuple[CachedAnswer, int]:
        self.stats.in_flight += 1
        try:
            answer, attempts = await self._fetch(request)
        except asyncio.CancelledError:
            raise
        except BaseException:
            self.stats.failed += 1
            raise
        finally:
            self.stats.in_flight -= 1
        if self._commits is not None:
            await self._commits.put(key, answer)
        self._count_answer(answer)
        return answer, attempts

    def _count_answer(self, answer: CachedAnswer) -> None:
        """Count a fresh answer's tokens and cost (once per answer paid for)."""
        self.stats.answered += 1
        self.stats.prompt_tokens += answer.prompt_tokens
        self.stats.cached_prompt_tokens += answer.cached_prompt_tokens
        self.stats.completion_tokens += answer.completion_tokens
        self.stats.cost_usd += self._cost(answer)

    def _count_retry(self, reason: str) -> None:
        self.stats.retries[reason] += 1

    def _cost(self, answer: CachedAnswer) -> float:
        return self.prices.cost(
            answer.model,
            answer.prompt_tokens,
            answer.completion_tokens,
            batch=answer.batch,
            cached_prompt_tokens=answer.cached_prompt_tokens,
        )

    def _result(self, answer: CachedAnswer, *, cached: bool, attempts: int) -> ChatResult:
        return ChatResult(
            text=answer.text,
            prompt_tokens=answer.prompt_tokens,
            completion_tokens=answer.completion_tokens,
            cost_usd=self._cost(answer),
            cached_prompt_tokens=answer.cached_prompt_tokens,
            cached=cached,
            attempts=attempts,
            finish_reason=answer.finish_reason,
        )

    async def close(self) -> None:
        """Cancel what is in flight (finished answers are already stored) and release resources."""
        tasks = [flight.task for flight in self._flights.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._close_transport()
        if self._owns_cache and self.cache is not None:
            self.cache.close()

    async def _close_transport(self) -> None:
        """Release clients and background tasks (engines override)."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()
