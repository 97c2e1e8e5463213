"""The Batch API path: the same ``complete()`` as :class:`LLMEngine`, at half the price, within 24 h.

Requests that miss the cache are queued; when the queue has been idle for ``flush_idle_s`` (or holds
``max_batch_requests``), they go out as one batch: a JSONL file uploaded with ``files.create`` (one
line per request, ``custom_id`` = the request's cache key), then ``batches.create`` on
``/v1/chat/completions`` with a 24 h window. A watcher polls ``batches.retrieve`` every
``poll_interval_s``, downloads the output and error files, stores every answer in the cache, and only
then forgets the batch. Items that failed go into a new batch, up to ``max_attempts`` submissions, then
the caller gets :class:`BatchItemFailed`.

Crash safety: the upload and its custom ids are recorded in a ledger (``llm_batches.sqlite`` next to
the cache) before the batch is created, and the batch id right after. A restarted engine re-attaches
to every open batch instead of submitting its requests again; an upload whose batch id was never
recorded is matched against the server's recent batches by input file before a batch is created.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from openmementos.llm.cache import CachedAnswer, ResponseCache
from openmementos.llm.completer import CachingCompleter, answer_from_completion
from openmementos.llm.engine import make_openai_client
from openmementos.llm.errors import BatchItemFailed, ConfigurationError, short_detail
from openmementos.llm.preflight import check_endpoint
from openmementos.llm.pricing import PriceTable
from openmementos.llm.request import ChatRequest
from openmementos.llm.retry import MalformedCompletion, as_llm_error
from openmementos.llm.settings import LLMSettings, display_url

log = logging.getLogger(__name__)

LEDGER_FILENAME = "llm_batches.sqlite"
CHAT_ENDPOINT = "/v1/chat/completions"
_TERMINAL_STATUSES = {"completed", "failed", "expired", "cancelled"}
_RECENT_BATCHES = 100
T = TypeVar("T")


@dataclass(frozen=True)
class OpenUpload:
    """A request file sent to the Batch API whose results are not stored yet."""

    file_id: str
    batch_id: str | None
    models: dict[str, str]
    """custom_id (request cache key) -> model, for pricing the answers."""


class BatchLedger:
    """The persisted list of open uploads and batches (SQLite, each change committed at once)."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, timeout=5)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS uploads (file_id TEXT PRIMARY KEY, batch_id TEXT)")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS items (file_id TEXT, custom_id TEXT, model TEXT,"
            " PRIMARY KEY (file_id, custom_id))"
        )

    def record_upload(self, file_id: str, models: dict[str, str]) -> None:
        with self._transaction():
            self._db.execute("INSERT INTO uploads VALUES (?, NULL)", (file_id,))
            self._db.executemany("INSERT INTO items VALUES (?, ?, ?)", [(file_id, k, m) for k, m in models.items()])

    def record_batch(self, file_id: str, batch_id: str) -> None:
        self._db.execute("UPDATE uploads SET batch_id=? WHERE file_id=?", (batch_id, file_id))

    def forget(self, file_id: str) -> None:
        with self._transaction():
            self._db.execute("DELETE FROM items WHERE file_id=?", (file_id,))
            self._db.execute("DELETE FROM uploads WHERE file_id=?", (file_id,))

    def open_uploads(self) -> list[OpenUpload]:
        uploads = []
        for file_id, batch_id in self._db.execute("SELECT file_id, batch_id FROM uploads").fetchall():
            rows = self._db.execute("SELECT custom_id, model FROM items WHERE file_id=?", (file_id,)).fetchall()
            uploads.append(OpenUpload(file_id, batch_id, dict(rows)))
        return uploads

    def _transaction(self) -> sqlite3.Connection:
        self._db.execute("BEGIN")
        return self._db  # sqlite3.Connection as a context manager commits, or rolls back on error

    def close(self) -> None:
        self._db.close()


@dataclass
class _Pending:
    request: ChatRequest
    future: asyncio.Future[tuple[CachedAnswer, int]]
    submissions: int = 0


class BatchEngine(CachingCompleter):
    """Chat completions through the OpenAI Batch API, with the cache, accounting and errors of
    :class:`LLMEngine`. Await many ``complete()`` calls together (``asyncio.gather``) so that they
    share one batch. Talks to a single endpoint; needs a cache (the ledger lives next to it)."""

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        cache: ResponseCache | str | Path,
        prices: PriceTable | None = None,
        poll_interval_s: float = 30.0,
        flush_idle_s: float = 1.0,
        max_batch_requests: int = 50_000,
        max_batch_bytes: int = 190 * 2**20,
    ) -> None:
        self.settings = settings or LLMSettings()
        endpoints = self.settings.endpoints()
        if len(endpoints) != 1:
            raise ConfigurationError("batch mode talks to exactly one endpoint; pass a single --base-url")
        api_key = self.settings.key()
        super().__init__(cache, prices)
        assert self.cache is not None
        self._secrets = (api_key,)
        self._client = make_openai_client(endpoints[0], api_key, self.settings)
        self._name = display_url(endpoints[0])
        self.max_tokens_override = self.settings.max_tokens
        self._retry = self.settings.retry_policy()
        self._ledger = BatchLedger(self.cache.path.parent / LEDGER_FILENAME)
        self.poll_interval_s = poll_interval_s
        self.flush_idle_s = flush_idle_s
        self.max_batch_requests = max_batch_requests
        self.max_batch_bytes = max_batch_bytes
        self._pending: dict[str, _Pending] = {}
        self._queue: dict[str, None] = {}  # insertion-ordered set of keys waiting for a batch
        self._queue_changed = asyncio.Event()
        self._submitted: dict[str, str] = {}  # key -> file id of the open upload carrying it
        self._tasks: set[asyncio.Task[None]] = set()
        self._started = False

    async def __aenter__(self) -> BatchEngine:
        self._start()
        return self

    async def preflight(self, model: str) -> None:
        """Check the endpoint answers and serves `model` (ConfigurationError naming the URL if not)."""
        await check_endpoint(self._client, self._name, model, timeout_s=self.settings.timeout_s, secrets=self._secrets)

    def _start(self) -> None:
        """Re-attach to the batches a previous run left open, and start the flusher (once)."""
        if self._started:
            return
        self._started = True
        for upload in self._ledger.open_uploads():
            log.info("re-attaching to batch upload %s (%d requests)", upload.file_id, len(upload.models))
            self._watch(upload)
        self._spawn(self._flush_loop())

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _watch(self, upload: OpenUpload) -> None:
        self._submitted.update(dict.fromkeys(upload.models, upload.file_id))
        self._spawn(self._watch_upload(upload))

    # -- requests -----------------------------------------------------------------------------------

    async def _fetch(self, request: ChatRequest) -> tuple[CachedAnswer, int]:
        self._start()
        key = request.cache_key()
        pending = _Pending(request, asyncio.get_running_loop().create_future())
        self._pending[key] = pending
        if key in self._submitted:
            pending.submissions = 1  # already in a batch a previous run submitted
        else:
            self._enqueue(key)
        try:
            return await pending.future
        finally:
            self._pending.pop(key, None)
            self._queue.pop(key, None)

    def _enqueue(self, key: str) -> None:
        self._queue[key] = None
        self._queue_changed.set()

    async def _flush_loop(self) -> None:
        while True:
            await self._queue_changed.wait()
            while len(self._queue) < self.max_batch_requests:
                self._queue_changed.clear()
                try:
                    async with asyncio.timeout(self.flush_idle_s):
                        await self._queue_changed.wait()
                except TimeoutError:
                    break
            self._queue_changed.clear()
            lines = self._take_batch()
            if lines:
                await self._submit(lines)
            if self._queue:
                self._queue_changed.set()

    def _take_batch(self) -> dict[str, str]:
        """Up to the size limits, the queued keys and their JSONL lines, removed from the queue."""
        lines: dict[str, str] = {}
        size = 0
        for key in list(self._queue):
            body = self._body(self._pending[key].request)
            line = json.dumps({"custom_id": key, "method": "POST", "url": CHAT_ENDPOINT, "body": body})
            if lines and (len(lines) >= self.max_batch_requests or size + len(line) + 1 > self.max_batch_bytes):
                break
            lines[key] = line
            size += len(line) + 1
            del self._queue[key]
        return lines

    def _body(self, request: ChatRequest) -> dict[str, Any]:
        folded = self.settings.folds_system(request.model)
        forms = self.settings.structured_forms()
        return request.body(form=forms[0], system_in_user=folded)

    async def _submit(self, lines: dict[str, str]) -> None:
        data = ("\n".join(lines.values()) + "\n").encode()
        models = {key: self._pending[key].request.model for key in lines}
        try:
            uploaded = await self._call(
                self._client.files.create, file=("openmementos-requests.jsonl", data), purpose="batch"
            )
            self._ledger.record_upload(uploaded.id, models)
            batch = await self._call(
                self._client.batches.create,
                input_file_id=uploaded.id,
                endpoint=CHAT_ENDPOINT,
                completion_window="24h",
            )
            self._ledger.record_batch(uploaded.id, batch.id)
        except Exception as exc:
            error = as_llm_error(exc, attempts=self.settings.max_attempts, secrets=self._secrets)
            log.error("could not submit a batch of %d requests: %s", len(lines), error)
            for key in lines:
                if (pending := self._pending.get(key)) is not None and not pending.future.done():
                    pending.future.set_exception(error)
            return
        log.info("submitted batch %s with %d requests", batch.id, len(lines))
        self.stats.sent += len(lines)
        for key in lines:
            if (pending := self._pending.get(key)) is not None:
                pending.submissions += 1
        self._watch(OpenUpload(uploaded.id, batch.id, models))

    # -- results ------------------------------------------------------------------------------------

    async def _watch_upload(self, upload: OpenUpload) -> None:
        try:
            batch_id = upload.batch_id or await self._adopt_or_create(upload)
            while (batch := await self._call(self._client.batches.retrieve, batch_id)).status not in _TERMINAL_STATUSES:
                await asyncio.sleep(self.poll_interval_s)
            answers, failures = await self._download_results(batch, upload)
        except Exception as exc:  # the batch stays in the ledger: a rerun picks it up again
            error = as_llm_error(exc, attempts=self.settings.max_attempts, secrets=self._secrets)
            log.error("lost track of batch upload %s: %s", upload.file_id, error)
            for key in upload.models:
                if (pending := self._pending.get(key)) is not None and not pending.future.done():
                    pending.future.set_exception(error)
            return
        assert self.cache is not None
        self.cache.put_many(answers.items())  # paid answers are stored before the batch is forgotten
        self._ledger.forget(upload.file_id)
        for key in upload.models:
            self._submitted.pop(key, None)
        for key, answer in answers.items():
            pending = self._pending.get(key)
            if pending is not None and not pending.future.done():
                pending.future.set_result((answer, pending.submissions))  # its caller counts it
            else:
                self._count_answer(answer)  # paid for, though nobody waits for it any more
        for key, reason in failures.items():
            self._retry_or_fail(key, reason)

    async def _adopt_or_create(self, upload: OpenUpload) -> str:
        """The batch of an upload whose batch id was never recorded: found on the server, or created."""
        recent = await self._call(self._client.batches.list, limit=_RECENT_BATCHES)
        batch_id = next((b.id for b in recent.data if b.input_file_id == upload.file_id), None)
        if batch_id is None:
            created = await self._call(
                self._client.batches.create,
                input_file_id=upload.file_id,
                endpoint=CHAT_ENDPOINT,
                completion_window="24h",
            )
            batch_id = created.id
        self._ledger.record_batch(upload.file_id, batch_id)
        return batch_id

    async def _download_results(self, batch: Any, upload: OpenUpload) -> tuple[dict[str, CachedAnswer], dict[str, str]]:
        answers: dict[str, CachedAnswer] = {}
        failures: dict[str, str] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._call(self._client.files.content, file_id)
            for line in content.text.splitlines():
                item = _json_or_none(line)
                key = item.get("custom_id") if isinstance(item, dict) else None
                if key not in upload.models:
                    continue
                response = item.get("response") or {}
                if response.get("status_code") == 200:
                    try:
                        answers[key] = answer_from_completion(
                            response.get("body"), model=upload.models[key], batch=True
                        )
                    except MalformedCompletion as exc:
                        failures[key] = str(exc)
                else:
                    failures[key] = _item_error(item)
        missing = f"no result in batch {batch.id} (status {batch.status})"
        for key in upload.models:
            if key not in answers and key not in failures:
                failures[key] = missing
        return answers, failures

    def _retry_or_fail(self, key: str, reason: str) -> None:
        pending = self._pending.get(key)
        if pending is None or pending.future.done():
            log.info("batch request %s failed (%s); nobody is waiting for it", key[:12], reason)
            return
        if pending.submissions < self.settings.max_attempts:
            self.stats.retries["batch_item"] += 1
            self._enqueue(key)
            return
        detail = short_detail(reason, self._secrets)
        pending.future.set_exception(BatchItemFailed(custom_id=key, attempts=pending.submissions, detail=detail))

    async def _call(self, method: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """One Batch/Files API call, with the engine's retry policy."""
        return await self._retry.call(lambda: method(*args, **kwargs), on_retry=self._count_retry)

    async def _close_transport(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.close()
        self._ledger.close()


def _json_or_none(line: str) -> Any:
    try:
        return json.loads(line)
    except ValueError:
        return None


def _item_error(item: dict[str, Any]) -> str:
    """What went wrong with one batch item, from its ``error`` or its non-200 ``response``."""
    if isinstance(item.get("error"), dict):
        return str(item["error"].get("message") or item["error"])
    response = item.get("response") or {}
    body = response.get("body") or {}
    message = body.get("error", {}).get("message") if isinstance(body, dict) else None
    return f"HTTP {response.get('status_code')}: {message or body}"
