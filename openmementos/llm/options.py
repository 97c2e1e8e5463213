"""The options of every stage that talks to an LLM endpoint, and opening the engine they describe.

`segment --scorer llm` and `annotate --model M` both take these (request models inherit
`EndpointOptions`), so an endpoint is configured the same way everywhere and opened by one function.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, SecretStr, model_validator

from openmementos.llm.request import STRUCTURED_FORMS
from openmementos.options import Cli, Request

if TYPE_CHECKING:
    from openmementos.llm.completer import ChatCompleter
    from openmementos.llm.pricing import PriceTable
    from openmementos.llm.settings import LLMSettings

LLM_PANEL = "LLM endpoint"


class EndpointOptions(Request):
    """Where the LLM is, how hard to drive it, and where its answers are cached."""

    base_url: Annotated[list[str], Cli(panel=LLM_PANEL, metavar="URL")] = Field(
        [], description="OpenAI-compatible endpoint; repeat for several replicas. Default: $OPENAI_BASE_URL."
    )
    api_key: Annotated[SecretStr | None, Cli(panel=LLM_PANEL, secret_env="OPENAI_API_KEY")] = Field(
        None, description="API key. Default: $OPENAI_API_KEY. Never written anywhere.", exclude=True
    )
    concurrency: Annotated[int, Cli(panel=LLM_PANEL)] = Field(64, ge=1, description="Requests in flight at most.")
    rpm: Annotated[float | None, Cli(panel=LLM_PANEL)] = Field(
        None, ge=0.1, description="Requests per minute, client-side."
    )
    tpm: Annotated[float | None, Cli(panel=LLM_PANEL)] = Field(
        None, ge=1, description="Tokens per minute, client-side."
    )
    timeout: Annotated[float, Cli(panel=LLM_PANEL)] = Field(
        300.0, ge=1, description="Seconds per HTTP request before retrying."
    )
    price_in: Annotated[float | None, Cli(panel=LLM_PANEL)] = Field(
        None, ge=0, description="US$ per 1M input tokens (overrides the price table; with --price-out)."
    )
    price_out: Annotated[float | None, Cli(panel=LLM_PANEL)] = Field(
        None, ge=0, description="US$ per 1M output tokens (overrides the price table; with --price-in)."
    )
    price_cached_in: Annotated[float | None, Cli(panel=LLM_PANEL)] = Field(
        None,
        ge=0,
        description="US$ per 1M prompt tokens served from the provider's prefix cache (with --price-in; "
        "default: the input price).",
    )
    cache_dir: Annotated[Path | None, Cli(panel=LLM_PANEL)] = Field(
        None, description="Response cache folder (default OUT_DIR/.llm); share it across runs to pay once."
    )
    structured_output: Annotated[str, Cli(panel=LLM_PANEL, metavar="FORM")] = Field(
        "auto",
        pattern="^(auto|" + "|".join(STRUCTURED_FORMS) + ")$",
        description="How JSON answers are requested: json_schema (OpenAI, vLLM), json_object with the schema "
        "(llama.cpp), none (the prompt only); auto starts strict and steps down once per endpoint it is refused.",
    )
    system_prompt: Annotated[str, Cli(panel=LLM_PANEL, metavar="ROLE")] = Field(
        "auto",
        pattern="^(auto|system|user)$",
        description="Where the instructions go: system, or user (the top of the first user turn, for chat "
        "templates without a system role); auto: user for Gemma and for servers that refuse a system role.",
    )
    max_tokens: Annotated[int | None, Cli(panel=LLM_PANEL)] = Field(
        None, ge=1, description="Answer budget of every request. Default: sized from what each answer must hold."
    )

    @model_validator(mode="after")
    def _both_prices(self) -> EndpointOptions:
        if (self.price_in is None) != (self.price_out is None):
            raise ValueError("give both --price-in and --price-out")
        if self.price_cached_in is not None and self.price_in is None:
            raise ValueError("--price-cached-in needs --price-in and --price-out")
        return self

    def secret_required(self, name: str) -> bool | None:
        """The API key is required for the hosted OpenAI API; a self-hosted server may take one."""
        if name == "api_key":
            return self.llm_settings().needs_key()
        return super().secret_required(name)

    def llm_settings(self) -> LLMSettings:
        from openmementos.llm.settings import LLMSettings

        return LLMSettings(
            base_urls=tuple(self.base_url),
            api_key=self.api_key.get_secret_value() if self.api_key else None,
            concurrency=self.concurrency,
            rpm=self.rpm,
            tpm=self.tpm,
            timeout_s=self.timeout,
            structured_output=self.structured_output,
            system_prompt=self.system_prompt,
            max_tokens=self.max_tokens,
        )

    def prices(self, model: str) -> PriceTable:
        from openmementos.llm.pricing import PriceTable

        if self.price_in is None:
            return PriceTable()
        return PriceTable({model: (self.price_in, self.price_out, self.price_cached_in)})


def engine_opener(
    options: EndpointOptions,
    model: str,
    out_dir: Path,
    *,
    batch: bool = False,
    poll_interval_s: float = 30.0,
) -> Callable[[], Awaitable[ChatCompleter]]:
    """Check the endpoint settings and the cache now, and return what opens the engine on its loop.

    A hosted endpoint without a key, or a cache folder that cannot be written, fails here, before any
    work. The returned coroutine function is awaited on the engine's event loop (`llm.runner`), so the
    engine's HTTP clients bind to that loop; it checks every endpoint serves `model` (`llm.preflight`)
    before the engine is handed out. A run refused there leaves no trace: the folders made for the
    cache are removed again.
    """
    from openmementos.llm.batch import BatchEngine
    from openmementos.llm.cache import ResponseCache
    from openmementos.llm.engine import LLMEngine, relax_gc

    settings = options.llm_settings()
    settings.key()
    cache_dir = options.cache_dir or out_dir / ".llm"
    made = [folder for folder in (out_dir, cache_dir) if not folder.exists()]
    with ResponseCache.in_dir(cache_dir) as cache:
        cache_path = cache.path
    prices = options.prices(model)

    async def open_engine() -> ChatCompleter:
        engine: LLMEngine | BatchEngine
        if batch:
            engine = BatchEngine(settings, cache=cache_path, prices=prices, poll_interval_s=poll_interval_s)
        else:
            relax_gc()  # many requests in flight: see there
            engine = LLMEngine(settings, cache=cache_path, prices=prices, model=model)
        try:
            await engine.preflight(model)
            if isinstance(engine, BatchEngine):
                await engine.__aenter__()
        except BaseException:
            await engine.close()
            for folder in reversed(made):
                shutil.rmtree(folder, ignore_errors=True)
            raise
        return engine

    return open_engine
