"""A loopback OpenAI-compatible server for tests and benchmarks, with deterministic fault injection.

It serves the routes the LLM engine uses: ``POST /v1/chat/completions``, ``GET /v1/models``, the files
routes (``POST /v1/files`` multipart, ``GET /v1/files/{id}``, ``GET /v1/files/{id}/content``) and the
batches routes (``POST /v1/batches``, ``GET /v1/batches``, ``GET /v1/batches/{id}``,
``POST /v1/batches/{id}/cancel``). Batches complete by themselves ``batch_delay_s`` after creation.

Two control routes let a test observe and steer it: ``GET /_standin/stats`` (request counts by route
and by a hash of the chat messages, faults injected) and ``POST /_standin/faults`` (replace the fault
plan and reset the counters).

Faults are chosen by the arrival number of a chat request (1, 2, 3, ...), so a plan such as "429 for
the first 3 requests" injects exactly three 429s whatever the concurrency. Answers come from a
*responder*: a function from the request body (the parsed JSON, with ``messages``) to the assistant
text, so a test can script any answer, including wrong ones.

The server is plain asyncio streams with a minimal HTTP/1.1 keep-alive parser: fast enough to drive
the engine at well over a thousand requests per second from its own process.

Use it as a context manager::

    with OpenAIStandIn(Faults(latency_s=0.05, rate_limit=FaultRule(first=2))) as server:
        engine = LLMEngine(LLMSettings(base_urls=(server.base_url,), api_key="test"), ...)
        ...
        assert server.stats().chat_requests == 12

``process=True`` runs it in a subprocess (its own core; the responder is then given as a
``"package.module:function"`` string). The command line is
``python -m support.openai_standin --faults JSON --responder MOD:FN`` (with tests/ on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import hashlib
import importlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHAT_ROUTE = "POST /v1/chat/completions"
_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    429: "Too Many Requests",
    500: "Internal Server Error",
}


def messages_hash(messages: Sequence[Mapping[str, Any]]) -> str:
    """The stand-in's identity of a chat request: sha256 of the canonical JSON of its messages."""
    canonical = json.dumps(list(messages), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def estimate_tokens(text: str) -> int:
    """Token count used in the stand-in's ``usage`` (about four characters per token)."""
    return len(text) // 4 + 1


# ---------------------------------------------------------------------------------------------------
# Fault plan


@dataclass(frozen=True)
class FaultRule:
    """Which arrivals a fault hits: the first ``first`` ones, and every ``every``-th one after that."""

    first: int = 0
    every: int = 0

    def hits(self, n: int) -> bool:
        return n <= self.first or (self.every > 0 and n % self.every == 0)


@dataclass(frozen=True)
class Faults:
    """A deterministic fault plan. Chat faults are checked in the order of the fields below."""

    latency_s: float = 0.0
    """Every chat request (and every batch item's turnaround) waits this long before answering."""
    rate_limit: FaultRule = FaultRule()
    """Answer 429 with ``retry-after`` (and ``retry-after-ms`` when set) headers."""
    retry_after_s: float | None = 0.05
    retry_after_ms: int | None = None
    server_error: FaultRule = FaultRule()
    """Answer 500."""
    hang: FaultRule = FaultRule()
    """Wait ``hang_s`` before answering (set it longer than the client's timeout)."""
    hang_s: float = 30.0
    truncate: FaultRule = FaultRule()
    """Send the headers and half the body, then drop the connection."""
    malformed_body: FaultRule = FaultRule()
    """Answer 200 with a body that is not valid JSON."""
    reject_response_format: bool = False
    """Answer 400 (mentioning response_format) to any request that carries ``response_format``."""
    llamacpp_response_format: bool = False
    """Answer like llama-cpp-python's server: HTTP 500 with its request model's validation error for a
    ``json_schema`` response format; ``{"type": "json_object", "schema": ...}`` is taken."""
    refuse_system_role: bool = False
    """Answer 400 "System role not supported" (a chat template without one) to requests with a system turn."""
    served_models: tuple[str, ...] = ()
    """What ``GET /models`` lists (nothing: a server that lists no models, whose model name is not checked)."""
    ratelimit_remaining_requests: int | None = None
    """When set, every answer carries ``x-ratelimit-remaining-requests`` with this value ..."""
    ratelimit_reset_requests: str = "1s"
    """... and ``x-ratelimit-reset-requests`` with this duration."""
    echo_auth_in_errors: bool = False
    """Hostile server: error bodies quote the request's Authorization header (to test redaction)."""
    batch_delay_s: float = 0.2
    """A batch reports ``completed`` this long after it was created."""
    batch_item_error: FaultRule = FaultRule()
    """Batch items (counted across all batches, in order) that fail with a 500 in the error file."""
    prefix_cache_min_tokens: int | None = None
    """When set, serve like a provider with automatic prefix caching (see :class:`PrefixCache`):
    ``usage.prompt_tokens_details.cached_tokens`` reports the prompt's longest prefix seen before,
    if it is at least this many tokens (OpenAI: 1,024; vLLM: any)."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Faults:
        raw = json.loads(text)
        rules = {f.name for f in dataclasses.fields(cls) if f.type in ("FaultRule", FaultRule)}
        values = {k: FaultRule(**v) if k in rules else v for k, v in raw.items()}
        values["served_models"] = tuple(values.get("served_models", ()))
        return cls(**values)


# ---------------------------------------------------------------------------------------------------
# Answers


@dataclass(frozen=True)
class Reply:
    """A scripted answer with explicit usage; a responder may return this instead of a plain string."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str = "stop"


class ErrorReply(Exception):
    """Raised by a responder to answer with an HTTP error instead (e.g. 400 "context length exceeded")."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Responder = Callable[[dict[str, Any]], "str | Reply"]
"""Maps a chat-completions request body (parsed JSON, with ``messages``) to the assistant's answer;
it may raise :class:`ErrorReply` to answer with an HTTP error."""


def default_responder(body: dict[str, Any]) -> str:
    """A deterministic answer that names the request it answers."""
    return f"answer to {messages_hash(body.get('messages', []))[:16]}"


def _load_responder(spec: str | Responder | None) -> Responder:
    if spec is None:
        return default_responder
    if callable(spec):
        return spec
    module_name, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module_name), attr)


# ---------------------------------------------------------------------------------------------------
# Prefix caching


class PrefixCache:
    """Which prompt prefixes this server has seen: what a provider's prefix cache would hold.

    An approximation, by characters: a prompt is its messages' roles and contents rendered as one text,
    cut into checkpoints every ``CHUNK_CHARS`` characters (128 tokens at ~4 characters a token, the step
    OpenAI caches in). A prompt's cached share is its longest checkpoint seen in an earlier prompt,
    over its length; ``cached_tokens`` is that share of its prompt tokens, rounded down to 128 tokens,
    and 0 below ``min_tokens``. Nothing is ever evicted.
    """

    CHUNK_CHARS = 512
    STEP_TOKENS = 128

    def __init__(self, min_tokens: int) -> None:
        self.min_tokens = min_tokens
        self._seen: set[bytes] = set()

    @staticmethod
    def rendered(messages: Sequence[Mapping[str, Any]]) -> str:
        return "".join(f"<|{m.get('role')}|>{m.get('content', '')}<|end|>" for m in messages)

    def cached_tokens(self, messages: Sequence[Mapping[str, Any]], prompt_tokens: int) -> int:
        """The cached prompt tokens of this prompt; remembers its prefixes for the prompts after it."""
        text = self.rendered(messages).encode()
        digest = hashlib.sha256()
        cached_chars = 0
        for start in range(0, len(text) - self.CHUNK_CHARS + 1, self.CHUNK_CHARS):
            digest.update(text[start : start + self.CHUNK_CHARS])
            checkpoint = digest.copy().digest()
            if checkpoint in self._seen and cached_chars == start:
                cached_chars = start + self.CHUNK_CHARS
            self._seen.add(checkpoint)
        tokens = prompt_tokens * cached_chars // max(len(text), 1) // self.STEP_TOKENS * self.STEP_TOKENS
        return tokens if tokens >= self.min_tokens else 0


# ---------------------------------------------------------------------------------------------------
# Observed traffic


@dataclass
class StandInStats:
    """What the stand-in saw since it started (or since its faults were last replaced)."""

    routes: Counter[str] = field(default_factory=Counter)
    chat_received: Counter[str] = field(default_factory=Counter)
    """Chat requests received, by :func:`messages_hash` (including those answered with a fault)."""
    chat_answered: Counter[str] = field(default_factory=Counter)
    """Chat requests answered 200 with a full body, by :func:`messages_hash`."""
    batch_items: Counter[str] = field(default_factory=Counter)
    """Batch lines processed, by :func:`messages_hash`."""
    faults: Counter[str] = field(default_factory=Counter)
    """Faults injected, by name (``rate_limit``, ``server_error``, ...)."""
    response_formats: Counter[str] = field(default_factory=Counter)
    """Chat requests received by the ``type`` of their ``response_format`` (``none`` without one)."""
    auth_headers: set[str] = field(default_factory=set)
    """Distinct Authorization header values seen (so a test can check the key that was sent)."""

    @property
    def chat_requests(self) -> int:
        return sum(self.chat_received.values())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            f.name: dict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "auth_headers"
        }
        out["auth_headers"] = sorted(self.auth_headers)
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> StandInStats:
        stats = cls(**{k: Counter(v) for k, v in raw.items() if k != "auth_headers"})
        stats.auth_headers = set(raw.get("auth_headers", []))
        return stats


# ---------------------------------------------------------------------------------------------------
# The server


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False


def _json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> _Response:
    return _Response(status, json.dumps(payload).encode(), headers=headers or {})


def _error(status: int, message: str, kind: str = "invalid_request_error", **headers: str) -> _Response:
    return _json_response({"error": {"message": message, "type": kind, "param": None, "code": None}}, status, headers)


def _llamacpp_validation_error(form: str) -> str:
    """The message llama-cpp-python's server puts in its 500 for a response format it does not model."""
    error = {
        "type": "literal_error",
        "loc": ("body", "response_format", "type"),
        "msg": "Input should be 'text' or 'json_object'",
        "input": form,
        "ctx": {"expected": "'text' or 'json_object'"},
    }
    return f"1 validation error:\n  {error!r}"


class _Server:
    """The asyncio server state: routes, fault plan, counters, stored files and batches."""

    def __init__(self, faults: Faults, responder: Responder) -> None:
        self.faults = faults
        self.responder = responder
        self.stats = StandInStats()
        self.chat_arrivals = 0
        self.batch_item_arrivals = 0
        self.files: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self._ids = 0
        self.prefixes = PrefixCache(faults.prefix_cache_min_tokens or 0)

    def _new_id(self, prefix: str) -> str:
        self._ids += 1
        return f"{prefix}-standin-{self._ids}"

    # -- connection handling ------------------------------------------------------------------------

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _version = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await self._read_body(reader, headers)
                try:
                    response = await self.dispatch(method, target.split("?", 1)[0], headers, body)
                except Exception as exc:  # a stand-in bug must surface as a visible 500, not a hang
                    response = _error(500, f"stand-in failure: {exc!r}", "standin_error")
                self._write(writer, response)
                if response.truncate:
                    return
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            writer.close()

    @staticmethod
    async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    return b"".join(chunks)
                chunks.append(chunk[:-2])
        return b""

    @staticmethod
    def _write(writer: asyncio.StreamWriter, response: _Response) -> None:
        head = [
            f"HTTP/1.1 {response.status} {_REASONS.get(response.status, 'Status')}",
            f"Content-Type: {response.content_type}",
            f"Content-Length: {len(response.body)}",
            *(f"{name}: {value}" for name, value in response.headers.items()),
            "",
            "",
        ]
        body = response.body[: len(response.body) // 2] if response.truncate else response.body
        writer.write("\r\n".join(head).encode("latin-1") + body)

    # -- routing ------------------------------------------------------------------------------------

    async def dispatch(self, method: str, path: str, headers: dict[str, str], body: bytes) -> _Response:
        parts = path.strip("/").split("/")
        if parts[0] == "v1":
            parts = parts[1:]
        route = f"{method} /v1/{'/'.join(parts)}" if parts[:1] != ["_standin"] else f"{method} {path}"
        if "authorization" in headers:
            self.stats.auth_headers.add(headers["authorization"])
        match method, parts:
            case "POST", ["chat", "completions"]:
                self.stats.routes[CHAT_ROUTE] += 1
                return await self.chat(json.loads(body), headers)
            case "GET", ["models"]:
                self.stats.routes[route] += 1
                listed = [{"id": name, "object": "model", "owned_by": "standin"} for name in self.faults.served_models]
                return _json_response({"object": "list", "data": listed})
            case "POST", ["files"]:
                self.stats.routes[route] += 1
                return self.create_file(headers, body)
            case "GET", ["files", file_id]:
                self.stats.routes["GET /v1/files/{id}"] += 1
                return self.file_meta(file_id)
            case "GET", ["files", file_id, "content"]:
                self.stats.routes["GET /v1/files/{id}/content"] += 1
                return self.file_content(file_id)
            case "POST", ["batches"]:
                self.stats.routes[route] += 1
                return self.create_batch(json.loads(body))
            case "GET", ["batches"]:
                self.stats.routes[route] += 1
                return _json_response({"object": "list", "data": list(self.batches.values())[::-1], "has_more": False})
            case "GET", ["batches", batch_id]:
                self.stats.routes["GET /v1/batches/{id}"] += 1
                return self.retrieve_batch(batch_id)
            case "POST", ["batches", batch_id, "cancel"]:
                self.stats.routes["POST /v1/batches/{id}/cancel"] += 1
                return self.cancel_batch(batch_id)
            case "GET", ["_standin", "stats"]:
                return _json_response(self.stats.to_dict())
            case "POST", ["_standin", "faults"]:
                self.faults = Faults.from_json(body.decode())
                self.stats = StandInStats()
                self.prefixes = PrefixCache(self.faults.prefix_cache_min_tokens or 0)
                self.chat_arrivals = self.batch_item_arrivals = 0
                return _json_response({"ok": True})
        self.stats.routes[route] += 1
        return _error(404, f"no route {method} {path}")

    # -- chat ---------------------------------------------------------------------------------------

    async def chat(self, request: dict[str, Any], headers: dict[str, str]) -> _Response:
        self.chat_arrivals += 1
        n, faults = self.chat_arrivals, self.faults
        key = messages_hash(request.get("messages", []))
        self.stats.chat_received[key] += 1
        response_format = request.get("response_format")
        form = response_format.get("type", "?") if isinstance(response_format, dict) else "none"
        self.stats.response_formats[form] += 1
        if faults.latency_s:
            await asyncio.sleep(faults.latency_s)
        if faults.rate_limit.hits(n):
            self.stats.faults["rate_limit"] += 1
            extra = {}
            if faults.retry_after_s is not None:
                extra["retry-after"] = f"{faults.retry_after_s:g}"
            if faults.retry_after_ms is not None:
                extra["retry-after-ms"] = str(faults.retry_after_ms)
            return _error(429, self._error_text("Rate limit reached", headers), "rate_limit_error", **extra)
        if faults.server_error.hits(n):
            self.stats.faults["server_error"] += 1
            return _error(500, self._error_text("The server had an error", headers), "server_error")
        if faults.hang.hits(n):
            self.stats.faults["hang"] += 1
            await asyncio.sleep(faults.hang_s)
        if faults.reject_response_format and "response_format" in request:
            self.stats.faults["reject_response_format"] += 1
            return _error(400, "Invalid parameter: 'response_format' is not supported by this model.")
        if faults.llamacpp_response_format and form not in ("none", "text", "json_object"):
            self.stats.faults["llamacpp_response_format"] += 1
            return _error(500, _llamacpp_validation_error(form), "internal_server_error")
        if faults.refuse_system_role and any(m.get("role") == "system" for m in request.get("messages", [])):
            self.stats.faults["refuse_system_role"] += 1
            return _error(400, "System role not supported")
        if faults.malformed_body.hits(n):
            self.stats.faults["malformed_body"] += 1
            return _Response(200, b'{"id": "chatcmpl-broken", "choices": [{"message": {"content": "x')
        try:
            completion = self.completion(request)
        except ErrorReply as reply:
            self.stats.faults[f"error_reply_{reply.status}"] += 1
            return _error(reply.status, reply.message)
        response = _json_response(completion, headers=self._ratelimit_headers())
        if faults.truncate.hits(n):
            self.stats.faults["truncate"] += 1
            response.truncate = True
        else:
            self.stats.chat_answered[key] += 1
        return response

    def completion(self, request: dict[str, Any]) -> dict[str, Any]:
        """The chat.completion object the responder's answer becomes."""
        answer = self.responder(request)
        reply = answer if isinstance(answer, Reply) else Reply(str(answer))
        prompt = "".join(str(m.get("content", "")) for m in request.get("messages", []))
        prompt_tokens = reply.prompt_tokens or estimate_tokens(prompt)
        completion_tokens = reply.completion_tokens or estimate_tokens(reply.text)
        limit = request.get("max_tokens") or request.get("max_completion_tokens")
        if limit and completion_tokens > limit:  # a generation stops at its token limit, mid-way
            reply = dataclasses.replace(reply, text=reply.text[: limit * 4], finish_reason="length")
            completion_tokens = limit
        usage: dict[str, Any] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        if self.faults.prefix_cache_min_tokens is not None:
            cached = self.prefixes.cached_tokens(request.get("messages", []), prompt_tokens)
            usage["prompt_tokens_details"] = {"cached_tokens": cached}
        return {
            "id": self._new_id("chatcmpl"),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.get("model", "standin"),
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": usage,
        }

    def _error_text(self, message: str, headers: dict[str, str]) -> str:
        if self.faults.echo_auth_in_errors:
            return f"{message} for credentials {headers.get('authorization', '')}"
        return message

    def _ratelimit_headers(self) -> dict[str, str]:
        if self.faults.ratelimit_remaining_requests is None:
            return {}
        return {
            "x-ratelimit-remaining-requests": str(self.faults.ratelimit_remaining_requests),
            "x-ratelimit-reset-requests": self.faults.ratelimit_reset_requests,
        }

    # -- files --------------------------------------------------------------------------------------

    def create_file(self, headers: dict[str, str], body: bytes) -> _Response:
        fields = _parse_multipart(headers.get("content-type", ""), body)
        if "file" not in fields:
            return _error(400, "multipart field 'file' is required")
        filename, content = fields["file"]
        meta = self._store_file(content, filename or "upload.jsonl", fields.get("purpose", ("", b""))[1].decode())
        return _json_response(meta)

    def _store_file(self, content: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = self._new_id("file")
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(content),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        self.files[file_id] = (meta, content)
        return meta

    def file_meta(self, file_id: str) -> _Response:
        if file_id not in self.files:
            return _error(404, f"no such file {file_id}")
        return _json_response(self.files[file_id][0])

    def file_content(self, file_id: str) -> _Response:
        if file_id not in self.files:
            return _error(404, f"no such file {file_id}")
        return _Response(200, self.files[file_id][1], content_type="application/octet-stream")

    # -- batches ------------------------------------------------------------------------------------

    def create_batch(self, request: dict[str, Any]) -> _Response:
        if request.get("input_file_id") not in self.files:
            return _error(400, f"no such input file {request.get('input_file_id')}")
        now = int(time.time())
        batch = {
            "id": self._new_id("batch"),
            "object": "batch",
            "endpoint": request.get("endpoint"),
            "errors": None,
            "input_file_id": request["input_file_id"],
            "completion_window": request.get("completion_window", "24h"),
            "status": "in_progress",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": now,
            "in_progress_at": now,
            "completed_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "metadata": request.get("metadata"),
        }
        self.batches[batch["id"]] = batch
        loop = asyncio.get_running_loop()
        loop.call_later(self.faults.batch_delay_s, self._finish_batch, batch["id"])
        return _json_response(batch)

    def retrieve_batch(self, batch_id: str) -> _Response:
        if batch_id not in self.batches:
            return _error(404, f"no such batch {batch_id}")
        return _json_response(self.batches[batch_id])

    def cancel_batch(self, batch_id: str) -> _Response:
        batch = self.batches.get(batch_id)
        if batch is None:
            return _error(404, f"no such batch {batch_id}")
        if batch["status"] == "in_progress":
            batch.update(status="cancelled", cancelled_at=int(time.time()))
        return _json_response(batch)

    def _finish_batch(self, batch_id: str) -> None:
        batch = self.batches[batch_id]
        if batch["status"] != "in_progress":
            return
        outputs, errors = [], []
        for line in self.files[batch["input_file_id"]][1].splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            self.batch_item_arrivals += 1
            self.stats.batch_items[messages_hash(item["body"].get("messages", []))] += 1
            result = {"id": self._new_id("batch_req"), "custom_id": item["custom_id"], "error": None}
            try:
                if self.faults.batch_item_error.hits(self.batch_item_arrivals):
                    self.stats.faults["batch_item_error"] += 1
                    raise ErrorReply(500, "The server had an error")
                outputs.append({**result, "response": {"status_code": 200, "body": self.completion(item["body"])}})
            except ErrorReply as reply:
                error_body = {"error": {"message": reply.message, "type": "server_error"}}
                errors.append({**result, "response": {"status_code": reply.status, "body": error_body}})
        batch.update(
            status="completed",
            completed_at=int(time.time()),
            request_counts={"total": len(outputs) + len(errors), "completed": len(outputs), "failed": len(errors)},
            output_file_id=self._jsonl_file(outputs, f"{batch_id}_output.jsonl"),
            error_file_id=self._jsonl_file(errors, f"{batch_id}_errors.jsonl"),
        )

    def _jsonl_file(self, rows: list[dict[str, Any]], filename: str) -> str | None:
        if not rows:
            return None
        content = "".join(json.dumps(row) + "\n" for row in rows).encode()
        return self._store_file(content, filename, "batch_output")["id"]


def _parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    """Fields of a multipart/form-data body: name -> (filename or None, content)."""
    boundary = content_type.partition("boundary=")[2].strip('"')
    if not boundary:
        return {}
    fields: dict[str, tuple[str | None, bytes]] = {}
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break
        head, _, content = part.partition(b"\r\n\r\n")
        disposition = next(
            (line for line in head.decode("utf-8").split("\r\n") if line.lower().startswith("content-disposition")),
            "",
        )
        params = dict(
            (key.strip(), value.strip().strip('"'))
            for key, _, value in (item.partition("=") for item in disposition.split(";")[1:])
        )
        fields[params.get("name", "")] = (params.get("filename"), content.removesuffix(b"\r\n"))
    return fields


async def _serve(server: _Server, host: str, port: int, on_ready: Callable[[int], None]) -> None:
    listener = await asyncio.start_server(server.handle_connection, host, port, backlog=4096)
    on_ready(listener.sockets[0].getsockname()[1])
    async with listener:
        await listener.serve_forever()


# ---------------------------------------------------------------------------------------------------
# The handle tests use


class OpenAIStandIn:
    """Start the stand-in on an ephemeral loopback port (in a thread, or a subprocess) and talk to it."""

    def __init__(
        self,
        faults: Faults | None = None,
        responder: Responder | str | None = None,
        *,
        process: bool = False,
        host: str = "127.0.0.1",
    ) -> None:
        if process and callable(responder):
            raise ValueError('a subprocess stand-in needs the responder as a "module:function" string')
        self.faults = faults or Faults()
        self._responder = responder
        self._process = process
        self._host = host
        self.port = 0
        self._proc: subprocess.Popen[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self._host}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The server's process id (this process for the thread mode), None before start."""
        if self._proc is not None:
            return self._proc.pid
        return os.getpid() if self._thread is not None else None

    def start(self) -> OpenAIStandIn:
        if self._process:
            self._start_process()
        else:
            self._start_thread()
        return self

    def _start_thread(self) -> None:
        ready = threading.Event()
        server = _Server(self.faults, _load_responder(self._responder))

        def on_ready(port: int) -> None:
            self.port = port
            ready.set()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            with contextlib.suppress(asyncio.CancelledError):
                self._loop.run_until_complete(_serve(server, self._host, 0, on_ready))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="openai-standin", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the OpenAI stand-in did not start")

    def _start_process(self) -> None:
        command = [sys.executable, "-m", "support.openai_standin", "--faults", self.faults.to_json()]
        if self._responder is not None:
            command += ["--responder", str(self._responder)]
        tests_dir = str(Path(__file__).resolve().parents[1])  # `support` is a package under tests/
        path = os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "PYTHONPATH": path}
        self._proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the OpenAI stand-in subprocess did not start")
        self.port = json.loads(line)["port"]

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(10)
            self._proc = None
        if self._loop is not None and self._thread is not None:
            loop = self._loop
            loop.call_soon_threadsafe(lambda: [task.cancel() for task in asyncio.all_tasks(loop)])
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> OpenAIStandIn:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- control ------------------------------------------------------------------------------------

    def _control(self, route: str, payload: bytes | None = None) -> Any:
        url = f"http://{self._host}:{self.port}/_standin/{route}"
        request = urllib.request.Request(url, data=payload, method="POST" if payload is not None else "GET")
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def stats(self) -> StandInStats:
        """Counts since the start or the last :meth:`set_faults`."""
        return StandInStats.from_dict(self._control("stats"))

    def set_faults(self, faults: Faults) -> None:
        """Replace the fault plan and reset every counter (arrival numbers start again at 1)."""
        self.faults = faults
        self._control("faults", faults.to_json().encode())


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the loopback OpenAI-compatible stand-in.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--faults", default="{}", help="the Faults plan as JSON")
    parser.add_argument("--responder", default=None, help='"package.module:function" giving the answers')
    args = parser.parse_args(argv)
    gc.set_threshold(10_000, 10, 10)  # a busy stand-in should not pause for the collector
    server = _Server(Faults.from_json(args.faults), _load_responder(args.responder))

    def on_ready(port: int) -> None:
        print(json.dumps({"port": port}), flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(server, args.host, args.port, on_ready))


if __name__ == "__main__":
    main()
