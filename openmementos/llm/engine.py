"""The LLM engine: chat completions against one or more OpenAI-compatible endpoints, paid for once.

    async with LLMEngine(LLMSettings(base_urls=("http://gpu1:8000/v1", "http://gpu2:8000/v1")),
                         cache=ResponseCache.in_dir(state_dir)) as engine:
        results = await asyncio.gather(*(engine.complete(r) for r in requests))

Each request goes: cache -> single-flight -> a concurrency slot -> the least-loaded endpoint that the
server has not paused -> the rate limiter -> ``POST /chat/completions`` through the openai client
(its own retries off: ours, in :mod:`openmementos.llm.retry`, are the only ones) -> the cache.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
from pathlib import Path

import openai

from openmementos.llm.cache import CachedAnswer, ResponseCache
from openmementos.llm.completer import CachingCompleter, EngineStats, answer_from_body
from openmementos.llm.limits import PauseGate, RateLimiter, exhausted_quota_seconds, retry_after_seconds
from openmementos.llm.pricing import PriceTable
from openmementos.llm.request import ChatRequest
from openmementos.llm.retry import as_llm_error, server_message
from openmementos.llm.settings import LLMSettings, display_url
from openmementos.llm.transport import LeanAsyncClient, httpx, make_http_client

log = logging.getLogger(__name__)

_GC_FIRST_THRESHOLD = 10_000
_NO_TELEMETRY_HEADERS = {
    name: openai.Omit()
    for name in (
        "X-Stainless-Lang",
        "X-Stainless-Package-Version",
        "X-Stainless-OS",
        "X-Stainless-Arch",
        "X-Stainless-Runtime",
        "X-Stainless-Runtime-Version",
        "X-Stainless-Async",
    )
}


def relax_gc() -> None:
    """Raise the cyclic garbage collector's first-generation threshold to 10,000 (never lower it).

    Every request in flight holds a few dozen container objects (task, futures, httpx and openai
    objects) for as long as it waits on the server. With Python's default threshold (700 allocations)
    the collector runs dozens of times per second at a thousand requests per second, keeps promoting
    live requests to the old generation, and its full scans cost about a fifth of the process's CPU
    (benchmarks/bench_llm_engine.py). Garbage is still collected, in larger and rarer batches.

    The setting is process-wide, so the program decides, not the engine: the ``annotate`` and
    ``segment`` commands and the benchmark call this once before they start an engine.
    """
    first, *older = gc.get_threshold()
    if first < _GC_FIRST_THRESHOLD:
        gc.set_threshold(_GC_FIRST_THRESHOLD, *older)


def make_openai_client(base_url: str, api_key: str, settings: LLMSettings) -> openai.AsyncOpenAI:
    """An ``AsyncOpenAI`` for one endpoint, with the client's own retries disabled.

    On the lean path (plain-http endpoints, see :mod:`openmementos.llm.transport`) the SDK's telemetry
    headers (``X-Stainless-*``: OS, runtime, retry count, ...) are left out: a self-hosted server has no
    use for them, and they are half the headers httpx would re-validate on every request.
    """
    http_client = make_http_client(
        base_url, max_connections=settings.concurrency, timeout_s=settings.timeout_s, keepalive=settings.fast_http
    )
    lean = isinstance(http_client, LeanAsyncClient)
    return openai.AsyncOpenAI(
        base_url=base_url,
        api_key=api_key,
        max_retries=0,
        timeout=settings.timeout_s,
        http_client=http_client,
        default_headers=_NO_TELEMETRY_HEADERS if lean else None,
    )


class _Endpoint:
    """One base URL: its client, its load, its server-ordered pause, and what it turned out to reject."""

    def __init__(self, base_url: str, api_key: str, settings: LLMSettings, stats: EngineStats) -> None:
        self.name = display_url(base_url)
        self.client = make_openai_client(base_url, api_key, settings)
        self._url = f"{base_url}/chat/completions"  # absolute: the client then parses it once, not twice
        self.gate = PauseGate(max_pause_s=settings.backoff_max_s)
        self.in_flight = 0
        self.structured_output = True
        self.max_tokens_field = "max_tokens"
        self._settings = settings
        self._stats = stats
        self._connection_failures = 0

    async def send(self, request: ChatRequest) -> CachedAnswer:
        """One chat completion (or one adaptation-and-resend after a 400 that names a parameter)."""
        while True:
            body = request.body(structured=self.structured_output, max_tokens_field=self.max_tokens_field)
            self.in_flight += 1
            self._stats.sent += 1
            try:
                async with asyncio.timeout(self._settings.timeout_s):
                    response = await self.client.post(self._url, body=body, cast_to=httpx.Response)
            except openai.BadRequestError as exc:
                if self._adapt(request, exc):
                    continue
                raise
            except openai.APIStatusError as exc:
                self._observe_refusal(exc)
                raise
            except openai.APITimeoutError:
                raise  # one slow answer says nothing about the endpoint
            except openai.APIConnectionError:
                self._connection_failures += 1
                backoff = self._settings.backoff_initial_s * 2 ** (self._connection_failures - 1)
                self.gate.pause(backoff)
                raise
            finally:
                self.in_flight -= 1
            self._connection_failures = 0
            if (pause := exhausted_quota_seconds(response.headers)) is not None:
                self.gate.pause(pause)
            return answer_from_body(response.content, model=request.model)

    def _observe_refusal(self, exc: openai.APIStatusError) -> None:
        """On 429 (or any status carrying retry-after), hold every sender of this endpoint."""
        headers = exc.response.headers
        pause = retry_after_seconds(headers) or exhausted_quota_seconds(headers)
        if pause is None and isinstance(exc, openai.RateLimitError):
            pause = self._settings.backoff_initial_s
        if pause is not None:
            self.gate.pause(pause)

    def _adapt(self, request: ChatRequest, exc: openai.BadRequestError) -> bool:
        """Learn from a 400 that names a parameter this server does not take; True to resend."""
        message = server_message(exc).lower()
        if self.structured_output and request.json_schema is not None and "response_format" in message:
            self.structured_output = False
            log.warning("%s rejects response_format: asking for plain text from now on", self.name)
            return True
        renamed = "max_tokens" in message and "max_completion_tokens" in message
        if request.max_tokens is not None and self.max_tokens_field == "max_tokens" and renamed:
            self.max_tokens_field = "max_completion_tokens"
            log.info("%s rejects max_tokens: sending max_completion_tokens from now on", self.name)
            return True
        return False


class LLMEngine(CachingCompleter):
    """Chat completions with bounded concurrency, rate limits, retries, a response cache and accounting.

    ``cache``: a :class:`ResponseCache` (caller-owned), a path to one (engine-owned) or None.
    ``prices``: the :class:`PriceTable` for cost accounting (defaults to the built-in one).
    At hundreds of requests per second, call :func:`relax_gc` once first (a process-wide setting).
    """

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        cache: ResponseCache | str | Path | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.settings = settings or LLMSettings()
        api_key = self.settings.key()
        endpoints = self.settings.endpoints()
        super().__init__(cache, prices)
        self._secrets = (api_key,)
        self._endpoints = [_Endpoint(url, api_key, self.settings, self.stats) for url in endpoints]
        self._rotation = itertools.count()
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        self._limiter = RateLimiter(self.settings.rpm, self.settings.tpm)
        self._retry = self.settings.retry_policy()

    def __repr__(self) -> str:
        return f"LLMEngine(endpoints={[e.name for e in self._endpoints]}, concurrency={self.settings.concurrency})"

    async def _fetch(self, request: ChatRequest) -> tuple[CachedAnswer, int]:
        attempts = 0

        async def attempt() -> CachedAnswer:
            nonlocal attempts
            attempts += 1
            return await self._attempt(request)

        try:
            answer = await self._retry.call(attempt, on_retry=self._count_retry)
        except Exception as exc:
            error = as_llm_error(exc, attempts=attempts, secrets=self._secrets)
            if error is exc:
                raise
            log.debug("request failed: %s", error)
            raise error from None
        return answer, attempts

    async def _attempt(self, request: ChatRequest) -> CachedAnswer:
        async with self._slots:
            endpoint = await self._choose_endpoint()
            if self._limiter.enabled:
                await self._limiter.acquire(request.estimated_tokens())
            return await endpoint.send(request)

    async def _choose_endpoint(self) -> _Endpoint:
        """The least-loaded endpoint that is not paused (ties rotate); waits while all are paused."""
        if len(self._endpoints) == 1:
            await self._endpoints[0].gate.wait()
            return self._endpoints[0]
        count = len(self._endpoints)
        while True:
            turn = next(self._rotation)
            ready = [i for i, endpoint in enumerate(self._endpoints) if endpoint.gate.remaining() == 0]
            if ready:
                best = min(ready, key=lambda i: (self._endpoints[i].in_flight, (i - turn) % count))
                return self._endpoints[best]
            await asyncio.sleep(min(endpoint.gate.remaining() for endpoint in self._endpoints))

    async def _close_transport(self) -> None:
        for endpoint in self._endpoints:
            await endpoint.client.close()
