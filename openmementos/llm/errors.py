"""The errors the LLM engine raises, and the redaction every error message goes through.

Every message is built by us from a short reason, never by passing a client exception through, and is
redacted: a hostile or chatty server that echoes the Authorization header cannot leak the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_SECRET_PATTERNS = (
    re.compile(r"(?i)bearer\s+[^\s\"',;]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"(?i)(api[_-]?key[\"'\s:=]+)[^\s\"',;]+"),
)
_MAX_DETAIL_CHARS = 300
MIN_SECRET_CHARS = 8
"""Shorter values are not masked by value: "x" as a key would turn every "x" of a message into "***".
(Key-shaped text and bearer tokens are masked whatever their length.)"""


def redact(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with the given secrets (whole, of plausible length) and anything that looks like a key
    or bearer token masked; other text is left as it is."""
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True):
        text = text.replace(secret, "***")
    for pattern in _SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + "***", text)
    return text


def short_detail(text: str, secrets: Iterable[str | None] = ()) -> str:
    """A redacted, single-line, bounded excerpt of a server message, fit for an error or a log."""
    flat = " ".join(redact(text, secrets).split())
    return flat if len(flat) <= _MAX_DETAIL_CHARS else flat[: _MAX_DETAIL_CHARS - 3] + "..."


class LLMError(Exception):
    """Base class of every error the LLM engine raises. ``reason`` is a short machine-friendly tag."""

    reason: str = "llm_error"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ConfigurationError(LLMError):
    """The engine cannot be set up (no API key for a hosted endpoint, bad base URL, ...)."""

    reason = "configuration"


class RetriesExhausted(LLMError):
    """Every allowed attempt failed with a transient error (429, 5xx, timeout, connection, malformed)."""

    def __init__(self, *, reason: str, attempts: int, last_status: int | None, detail: str = "") -> None:
        status = f", last HTTP status {last_status}" if last_status is not None else ""
        message = f"gave up after {attempts} attempt(s): {reason}{status}"
        super().__init__(f"{message} ({detail})" if detail else message, reason=reason)
        self.attempts = attempts
        self.last_status = last_status
        self.detail = detail


class RequestRejected(LLMError):
    """The server refused the request itself (4xx other than 408/409/429); retrying cannot help."""

    reason = "rejected"

    def __init__(self, *, status: int, detail: str) -> None:
        super().__init__(f"the server rejected the request with HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class BatchItemFailed(LLMError):
    """A request sent through the Batch API failed in every batch it was submitted to."""

    reason = "batch_item_failed"

    def __init__(self, *, custom_id: str, attempts: int, detail: str) -> None:
        super().__init__(f"batch request {custom_id[:12]} failed in {attempts} batch(es): {detail}")
        self.custom_id = custom_id
        self.attempts = attempts
        self.detail = detail


class MalformedAnswer(LLMError):
    """The model's answer does not contain the JSON the caller asked for."""

    reason = "malformed_answer"
