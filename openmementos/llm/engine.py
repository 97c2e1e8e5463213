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
import re
from pathlib import Path

import openai

from openmementos.llm.cache import CachedAnswer, ResponseCache
from openmementos.llm.completer import CachingCompleter, EngineStats, answer_from_body
from openmementos.llm.errors import RequestRejected, short_detail
from openmementos.llm.limits import PauseGate, RateLimiter, exhausted_quota_seconds, retry_after_seconds
from openmementos.llm.preflight import check_endpoint
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


class _FormRefused(Exception):
    """The server refused a request because of its ``response_format``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


_SYSTEM_ROLE_REFUSED = re.compile(r"system (role|message|prompt)|roles? must alternate", re.IGNORECASE)


class _Endpoint:
    """One base URL: its client, its load, its server-ordered pause, and what it turned out to reject.

    Structured output is negotiated here: requests carrying a schema use the endpoint's current form
    (`LLMSettings.structured_forms`, strictest first). Until a form has been answered once, such
    requests go out one at a time, so a server that refuses the form refuses exactly one request; a
    refusal (HTTP 400 or 422, or a 5xx whose body names ``response_format``) moves the endpoint to the
    next form, is noted once, and the request is sent again in that form, never retried as a server
    error.
    """

    def __init__(
        self, base_url: str, api_key: str, settings: LLMSettings, stats: EngineStats, *, fold_system: bool
    ) -> None:
        self.name = display_url(base_url)
        self.client = make_openai_client(base_url, api_key, settings)
        self._url = f"{base_url}/chat/completions"  # absolute: the client then parses it once, not twice
        self.gate = PauseGate(max_pause_s=settings.backoff_max_s)
        self.in_flight = 0
        self.forms = list(settings.structured_forms())
        self._form_settled = self.forms[0] == "none"
        self._probe = asyncio.Lock()
        self.max_tokens_field = "max_tokens"
        self.fold_system = fold_system
        self._may_fold_system = settings.system_prompt == "auto"
        self._settings = settings
        self._stats = stats
        self._connection_failures = 0

    @property
    def form(self) -> str:
        return self.forms[0]

    async def send(self, request: ChatRequest) -> CachedAnswer:
        """One chat completion, in the form this endpoint takes (negotiating it if need be)."""
        while True:
            form = self.form if request.json_schema is not None else "none"
            try:
                if form == "none" or self._form_settled:
                    return await self._post(request, form)
                async with self._probe:
                    if self._form_settled or self.form != form:
                        continue  # settled (or moved on) while this request waited: look again
                    answer = await self._post(request, form)
                    self._form_settled = True
                    return answer
            except _FormRefused as refused:
                self._refuse_form(form, refused)

    def _refuse_form(self, form: str, refused: _FormRefused) -> None:
        if self.form != form:
            return  # another request already moved this endpoint on
        if len(self.forms) == 1:
            raise RequestRejected(
                status=refused.status,
                detail=f"{refused.detail} (this server refuses structured output as {form}: "
                "try --structured-output auto or none)",
            )
        self.forms.pop(0)
        self._form_settled = self.form == "none"
        message = f"{self.name} refuses structured output as {form} (HTTP {refused.status}): using {self.form}"
        log.warning("%s", message)
        self._stats.note(message)

    async def _post(self, request: ChatRequest, form: str) -> CachedAnswer:
        """One HTTP request (or one adaptation-and-resend after a refusal that names a parameter)."""
        while True:
            body = request.body(form=form, max_tokens_field=self.max_tokens_field, system_in_user=self.fold_system)
            if request.json_schema is not None:
                self._stats.structured_output[self.name] = form
            self.in_flight += 1
            self._stats.sending += 1
            self._stats.sent += 1
            try:
                async with asyncio.timeout(self._settings.timeout_s):
                    response = await self.client.post(self._url, body=body, cast_to=httpx.Response)
            except openai.APIStatusError as exc:
                if form != "none" and _refuses_form(exc, form):
                    raise _FormRefused(exc.status_code, short_detail(server_message(exc))) from None
                if isinstance(exc, openai.BadRequestError | openai.UnprocessableEntityError) and self._adapt(
                    request, exc
                ):
                    continue
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
                self._stats.sending -= 1
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

    def _adapt(self, request: ChatRequest, exc: openai.APIStatusError) -> bool:
        """Learn from a 400/422 that names a parameter or role this server does not take; True to resend."""
        message = server_message(exc).lower()
        renamed = "max_tokens" in message and "max_completion_tokens" in message
        if request.max_tokens is not None and self.max_tokens_field == "max_tokens" and renamed:
            self.max_tokens_field = "max_completion_tokens"
            log.info("%s rejects max_tokens: sending max_completion_tokens from now on", self.name)
            return True
        has_system = any(m.get("role") == "system" for m in request.messages)
        if has_system and not self.fold_system and self._may_fold_system and _SYSTEM_ROLE_REFUSED.search(message):
            self.fold_system = True
            note = f"{self.name} refuses the system role: instructions go at the top of the first user turn"
            log.warning("%s", note)
            self._stats.note(note)
            return True
        return False


def _refuses_form(exc: openai.APIStatusError, form: str) -> bool:
    """A refusal of the structured-output form: 400, 422 or a 5xx whose message names `response_format`
    or the form itself (llama.cpp's server answers 500 with the validation error of its request model;
    others say "json_schema is not supported")."""
    status = exc.status_code
    if status not in (400, 422) and status < 500:
        return False
    texts = [server_message(exc)]
    if status >= 500 and exc.response is not None:
        texts.append(exc.response.text)
    return any(word in text for text in texts for word in ("response_format", form))


class LLMEngine(CachingCompleter):
    """Chat completions with bounded concurrency, rate limits, retries, a response cache and accounting.

    ``cache``: a :class:`ResponseCache` (caller-owned), a path to one (engine-owned) or None.
    ``prices``: the :class:`PriceTable` for cost accounting (defaults to the built-in one).
    ``model``: the model the run uses, if one (``system_prompt="auto"`` folds system messages for
    families without a system role; :meth:`preflight` checks the endpoints serve it).
    At hundreds of requests per second, call :func:`relax_gc` once first (a process-wide setting).
    """

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        cache: ResponseCache | str | Path | None = None,
        prices: PriceTable | None = None,
        model: str = "",
    ) -> None:
        self.settings = settings or LLMSettings()
        api_key = self.settings.key()
        endpoints = self.settings.endpoints()
        super().__init__(cache, prices)
        self._secrets = (api_key,)
        self.max_tokens_override = self.settings.max_tokens
        self._endpoints = [
            _Endpoint(url, api_key, self.settings, self.stats, fold_system=self.settings.folds_system(model))
            for url in endpoints
        ]
        self._rotation = itertools.count()
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        self._limiter = RateLimiter(self.settings.rpm, self.settings.tpm)
        self._retry = self.settings.retry_policy()

    def __repr__(self) -> str:
        return f"LLMEngine(endpoints={[e.name for e in self._endpoints]}, concurrency={self.settings.concurrency})"

    async def preflight(self, model: str) -> None:
        """Check every endpoint answers and serves `model` (ConfigurationError naming the URL if not)."""
        await asyncio.gather(
            *(
                check_endpoint(e.client, e.name, model, timeout_s=self.settings.timeout_s, secrets=self._secrets)
                for e in self._endpoints
            )
        )

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
