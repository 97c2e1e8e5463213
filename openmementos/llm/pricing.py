"""What answers cost: a per-model table of US dollars per million input, cached-input and output tokens.

Prompt tokens a provider serves from its prefix cache (OpenAI: automatic for prompts of >= 1,024
tokens, in 128-token steps; vLLM and SGLang: any shared prefix) are billed at the cached-input rate
where the model has one, else at the input rate.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

BATCH_DISCOUNT = 0.5
"""The Batch API bills half the synchronous price."""


@dataclass(frozen=True)
class ModelPrice:
    """US dollars per million tokens."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None
    """The rate of prompt tokens served from the provider's prefix cache; None: billed as input."""

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0) -> float:
        """US dollars for one answer (at the synchronous price)."""
        cached = min(cached_prompt_tokens, prompt_tokens)
        cached_rate = self.input_per_mtok if self.cached_input_per_mtok is None else self.cached_input_per_mtok
        fresh = prompt_tokens - cached
        return (fresh * self.input_per_mtok + cached * cached_rate + completion_tokens * self.output_per_mtok) / 1e6


DEFAULT_PRICES: dict[str, ModelPrice] = {
    # OpenAI list prices, standard tier, as published on openai.com/api/pricing in August 2025:
    # input, output, cached input. Override with a prices file for other models or tiers.
    "gpt-4o": ModelPrice(2.50, 10.00, 1.25),
    "gpt-4o-mini": ModelPrice(0.15, 0.60, 0.075),
    "gpt-4.1": ModelPrice(2.00, 8.00, 0.50),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60, 0.10),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40, 0.025),
    "gpt-5": ModelPrice(1.25, 10.00, 0.125),
    "gpt-5-mini": ModelPrice(0.25, 2.00, 0.025),
    "gpt-5-nano": ModelPrice(0.05, 0.40, 0.005),
    "o3-mini": ModelPrice(1.10, 4.40, 0.55),
    "o4-mini": ModelPrice(1.10, 4.40, 0.275),
}


def _as_price(value: ModelPrice | Mapping[str, Any] | Any) -> ModelPrice:
    if isinstance(value, ModelPrice):
        return value
    if isinstance(value, Mapping):
        cached = value.get("cached_input")
        return ModelPrice(float(value["input"]), float(value["output"]), None if cached is None else float(cached))
    input_price, output_price, *cached_price = value
    cached = cached_price[0] if cached_price else None
    return ModelPrice(float(input_price), float(output_price), None if cached is None else float(cached))


class PriceTable:
    """Prices by model name. A dated snapshot (``gpt-4o-mini-2024-07-18``) takes its family's price.

    A model the table does not know costs 0, with one warning per model, so a self-hosted endpoint
    never blocks a run.
    """

    def __init__(self, prices: Mapping[str, Any] | None = None, *, include_defaults: bool = True) -> None:
        self._prices = dict(DEFAULT_PRICES) if include_defaults else {}
        self._prices.update({model: _as_price(value) for model, value in (prices or {}).items()})
        self._warned: set[str] = set()

    @classmethod
    def from_file(cls, path: str | Path) -> PriceTable:
        """Defaults overridden by a JSON or YAML mapping ``model: {input: $/1M, output: $/1M}`` (optionally
        ``cached_input: $/1M``)."""
        text = Path(path).read_text()
        if Path(path).suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        return cls(data or {})

    def price(self, model: str) -> ModelPrice | None:
        if model in self._prices:
            return self._prices[model]
        families = [name for name in self._prices if model.startswith(name + "-")]
        return self._prices[max(families, key=len)] if families else None

    def cost(
        self,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        batch: bool = False,
        cached_prompt_tokens: int = 0,
    ) -> float:
        """The price of one answer in US dollars (`cached_prompt_tokens` of the prompt at the cached rate)."""
        price = self.price(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("no price known for model %r: its cost is counted as 0", model)
            return 0.0
        cost = price.cost(prompt_tokens, completion_tokens, cached_prompt_tokens)
        return cost * BATCH_DISCOUNT if batch else cost


def cached_share(cached_tokens: int, prompt_tokens: int) -> str:
    """The share of prompt tokens served from the provider's prefix cache, e.g. "62%"."""
    return f"{cached_tokens / prompt_tokens:.0%}" if prompt_tokens else "0%"
