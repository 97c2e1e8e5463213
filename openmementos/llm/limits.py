"""Pacing: client-side request/token budgets, and the pauses a server asks for in its headers.

* :class:`RateLimiter` keeps requests-per-minute and tokens-per-minute budgets (token buckets that
  refill continuously, allow a one-second burst, and may go into debt for one large request).
* :class:`PauseGate` is shared by every sender of one endpoint: when the server says "wait" (a
  ``retry-after`` on a 429, or ``x-ratelimit-remaining-*: 0``), all of them wait, not just the one
  that got the answer.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Mapping

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float | None:
    """Seconds in a rate-limit reset value such as ``"1s"``, ``"6m0s"``, ``"20ms"`` or ``"0.5"``."""
    text = text.strip()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(number + unit for number, unit in parts) != text:
        return None
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in parts)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait a server asks for: ``retry-after-ms``, else ``retry-after`` (seconds or an HTTP date)."""
    if (value := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(value) / 1000)
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def exhausted_quota_seconds(headers: Mapping[str, str]) -> float | None:
    """How long to hold all senders when ``x-ratelimit-remaining-{requests,tokens}`` reached 0."""
    fields = {name.lower(): value for name, value in headers.items() if name[:12].lower() == "x-ratelimit-"}
    waits = []
    for kind in ("requests", "tokens"):
        remaining = fields.get(f"x-ratelimit-remaining-{kind}")
        reset = fields.get(f"x-ratelimit-reset-{kind}")
        if remaining is None or reset is None:
            continue
        try:
            if float(remaining) > 0:
                continue
        except ValueError:
            continue
        if (seconds := parse_duration(reset)) is not None:
            waits.append(seconds)
    return max(waits) if waits else None


class PauseGate:
    """A shared "not before" time: :meth:`pause` extends it, :meth:`wait` sleeps until it has passed."""

    def __init__(self, max_pause_s: float) -> None:
        self._until = 0.0
        self._max_pause_s = max_pause_s

    def pause(self, seconds: float) -> None:
        self._until = max(self._until, time.monotonic() + min(seconds, self._max_pause_s))

    def remaining(self) -> float:
        return max(0.0, self._until - time.monotonic())

    async def wait(self) -> None:
        while (delay := self.remaining()) > 0:
            await asyncio.sleep(delay)


class _TokenBucket:
    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(self.rate, 1.0)
        self.level = self.capacity
        self.updated = time.monotonic()

    def delay(self) -> float:
        now = time.monotonic()
        self.level = min(self.capacity, self.level + (now - self.updated) * self.rate)
        self.updated = now
        return 0.0 if self.level > 0 else -self.level / self.rate + 1e-3


class RateLimiter:
    """Requests-per-minute and tokens-per-minute budgets; callers are admitted in arrival order."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self._requests = _TokenBucket(rpm) if rpm else None
        self._tokens = _TokenBucket(tpm) if tpm else None
        self._lock = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self._requests is not None or self._tokens is not None

    async def acquire(self, tokens: int) -> None:
        """Wait until one more request carrying about ``tokens`` tokens fits in the budgets."""
        buckets = [bucket for bucket in (self._requests, self._tokens) if bucket is not None]
        if not buckets:
            return
        async with self._lock:
            while (delay := max(bucket.delay() for bucket in buckets)) > 0:
                await asyncio.sleep(delay)
            if self._requests is not None:
                self._requests.level -= 1
            if self._tokens is not None:
                self._tokens.level -= tokens
