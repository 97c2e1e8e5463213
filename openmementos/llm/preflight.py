"""Before a run: is each endpoint there, at the right path, and does it serve the model?

`check_endpoint` asks ``GET /models`` once (a second time after a second, for a server still binding
its port) with a short timeout, so nothing listening, a wrong path, a refused key or an unknown model
fails within seconds, naming the URL, instead of after every request has spent its retries. A server
that lists its models must list the one asked for (a llama.cpp server listing the GGUF's path also
accepts the file name); one that lists none, or has no such route, is taken at its word.
"""

from __future__ import annotations

import asyncio
import logging

import openai

from openmementos.llm.errors import ConfigurationError, short_detail
from openmementos.llm.retry import server_message

log = logging.getLogger(__name__)

PREFLIGHT_TIMEOUT_S = 15.0
_ATTEMPTS = 2
_PAUSE_S = 1.0
_NOT_IMPLEMENTED = {405, 501}
_SHOWN_MODELS = 8


def serves(listed: list[str], model: str) -> bool:
    """Whether a server listing `listed` serves `model` (by id, or by file name for a listed path)."""
    return model in listed or any(name.rstrip("/").rsplit("/", 1)[-1] == model for name in listed)


async def check_endpoint(
    client: openai.AsyncOpenAI, name: str, model: str, *, timeout_s: float, secrets: tuple[str, ...] = ()
) -> list[str]:
    """The models `name` lists; ConfigurationError (naming `name`) when it cannot serve `model`."""
    timeout = min(timeout_s, PREFLIGHT_TIMEOUT_S)
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with asyncio.timeout(timeout):
                page = await client.models.list()
            break
        except (openai.APIConnectionError, TimeoutError) as exc:
            if attempt < _ATTEMPTS:
                await asyncio.sleep(_PAUSE_S)
                continue
            what = f"no answer within {timeout:g} s" if _timed_out(exc) else "nothing listening (connection refused)"
            raise ConfigurationError(
                f"cannot reach the LLM endpoint {name}: {what}. Is the server running, and is --base-url right?"
            ) from None
        except openai.APIStatusError as exc:
            detail = short_detail(server_message(exc), secrets)
            if exc.status_code in _NOT_IMPLEMENTED:
                log.info("%s has no GET /models (HTTP %d): model name not checked", name, exc.status_code)
                return []
            if exc.status_code in (401, 403):
                raise ConfigurationError(
                    f"{name} refused the API key (HTTP {exc.status_code}: {detail}); check --api-key or $OPENAI_API_KEY"
                ) from None
            if exc.status_code == 404:
                raise ConfigurationError(
                    f"{name}/models is not found (HTTP 404): --base-url must be the API root, usually ending in /v1"
                ) from None
            if exc.status_code >= 500:
                log.warning("%s/models answered HTTP %d (%s): going on", name, exc.status_code, detail)
                return []
            raise ConfigurationError(f"{name}/models answered HTTP {exc.status_code}: {detail}") from None
    listed = [str(item.id) for item in page.data]
    if listed and not serves(listed, model):
        more = len(listed) - _SHOWN_MODELS
        shown = ", ".join(listed[:_SHOWN_MODELS]) + (f" and {more} more" if more > 0 else "")
        raise ConfigurationError(f"{name} does not serve the model {model!r}; it serves: {shown} (pass one as --model)")
    return listed


def _timed_out(exc: BaseException) -> bool:
    return isinstance(exc, openai.APITimeoutError | TimeoutError)
