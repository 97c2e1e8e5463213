"""How to reach the LLM: endpoints, key, concurrency, budgets, timeouts and the retry policy."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from openmementos.llm.errors import ConfigurationError
from openmementos.llm.request import STRUCTURED_FORMS
from openmementos.llm.retry import RetryPolicy

OPENAI_BASE_URL = "https://api.openai.com/v1"
_PLACEHOLDER_KEY = "no-key"
"""Sent to self-hosted servers (vLLM, llama.cpp) started without an API key; they ignore it."""
STRUCTURED_OUTPUT_MODES = ("auto", *STRUCTURED_FORMS)
SYSTEM_PROMPT_MODES = ("auto", "system", "user")
_NO_SYSTEM_ROLE = re.compile(r"gemma", re.IGNORECASE)
"""Model families whose chat templates have no system role (llama.cpp's `gemma` format drops it)."""


@dataclass(frozen=True)
class LLMSettings:
    """Engine settings; every field has a sane default and the CLI maps its options onto them.

    ``base_urls``: one or more OpenAI-compatible endpoints (replicas share the load); empty means
    ``$OPENAI_BASE_URL``, else OpenAI. ``api_key``: empty means ``$OPENAI_API_KEY``; required for
    OpenAI itself, optional for self-hosted servers. ``rpm``/``tpm``: client-side requests and tokens
    per minute (None: unlimited, the server's 429s and rate-limit headers still pace us).
    ``max_attempts`` caps the HTTP requests per answer, retries included.

    ``structured_output``: how JSON Schemas are sent (``auto`` negotiates per endpoint, strictest form
    first, see :data:`STRUCTURED_FORMS`). ``system_prompt``: ``user`` puts system messages at the top of
    the first user turn, ``auto`` does so for model families without a system role and for servers
    that refuse one. ``max_tokens``: replaces every request's answer budget.
    """

    base_urls: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 64
    rpm: float | None = None
    tpm: float | None = None
    timeout_s: float = 300.0
    max_attempts: int = 6
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    fast_http: bool = True
    """Use the lean keep-alive transport for plain-http endpoints (see :mod:`openmementos.llm.transport`)."""
    structured_output: str = "auto"
    system_prompt: str = "auto"
    max_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigurationError(f"concurrency must be at least 1, got {self.concurrency}")
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be at least 1, got {self.max_attempts}")
        for name in ("rpm", "tpm"):
            if (value := getattr(self, name)) is not None and value <= 0:
                raise ConfigurationError(f"{name} must be positive, got {value}")
        if self.timeout_s <= 0:
            raise ConfigurationError(f"timeout_s must be positive, got {self.timeout_s}")
        if self.structured_output not in STRUCTURED_OUTPUT_MODES:
            raise ConfigurationError(
                f"structured_output must be one of {', '.join(STRUCTURED_OUTPUT_MODES)}, got {self.structured_output!r}"
            )
        if self.system_prompt not in SYSTEM_PROMPT_MODES:
            raise ConfigurationError(
                f"system_prompt must be one of {', '.join(SYSTEM_PROMPT_MODES)}, got {self.system_prompt!r}"
            )
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigurationError(f"max_tokens must be at least 1, got {self.max_tokens}")

    def structured_forms(self) -> tuple[str, ...]:
        """The structured-output forms to try, in order (one unless negotiating)."""
        return STRUCTURED_FORMS if self.structured_output == "auto" else (self.structured_output,)

    def folds_system(self, model: str) -> bool:
        """Whether system messages go into the first user turn from the start (``auto`` may still
        switch an endpoint over when it refuses the system role)."""
        if self.system_prompt == "auto":
            return bool(_NO_SYSTEM_ROLE.search(model))
        return self.system_prompt == "user"

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.backoff_initial_s, self.backoff_max_s)

    def endpoints(self) -> tuple[str, ...]:
        """The base URLs to use, from the settings, else ``$OPENAI_BASE_URL``, else OpenAI's."""
        urls = self.base_urls or ((os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL),)
        for url in urls:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigurationError(f"not an http(s) base URL: {display_url(url)!r}")
        return tuple(url.rstrip("/") for url in urls)

    def key(self) -> str:
        """The API key to send: the setting, else ``$OPENAI_API_KEY``, else a placeholder for self-hosted
        servers. Raises :class:`ConfigurationError` when a hosted OpenAI endpoint has no key."""
        key = self.api_key or os.environ.get("OPENAI_API_KEY")
        if key:
            return key
        if self.needs_key():
            raise ConfigurationError("no API key for api.openai.com: pass --api-key or set OPENAI_API_KEY")
        return _PLACEHOLDER_KEY

    def needs_key(self) -> bool:
        """Whether an endpoint is the hosted OpenAI API (self-hosted servers take any key, or none)."""
        return any(urlsplit(url).hostname == urlsplit(OPENAI_BASE_URL).hostname for url in self.endpoints())


def display_url(url: str) -> str:
    """A URL fit for logs and messages: any ``user:password@`` part is dropped."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc).geturl()
