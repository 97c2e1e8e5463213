"""What answers cost: a per-model table of US dollars per million input and output tokens."""

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


DEFAULT_PRICES: dict[str, ModelPrice] = {
    # OpenAI list prices (standard tier, 2025). Override with a prices file for other models or tiers.
    "gpt-4o": ModelPrice(2.50, 10.00),
    "gpt-4o-mini": ModelPrice(0.15, 0.60),
    "gpt-4.1": ModelPrice(2.00, 8.00),
    "gpt-4.1-mini": ModelPrice(0.40, 1.60),
    "gpt-4.1-nano": ModelPrice(0.10, 0.40),
    "gpt-5": ModelPrice(1.25, 10.00),
    "gpt-5-mini": ModelPrice(0.25, 2.00),
    "gpt-5-nano": ModelPrice(0.05, 0.40),
    "o3-mini": ModelPrice(1.10, 4.40),
    "o4-mini": ModelPrice(1.10, 4.40),
}


def _as_price(value: ModelPrice | Mapping[str, Any] | Any) -> ModelPrice:
    if isinstance(value, ModelPrice):
        return value
    if isinstance(value, Mapping):
        return ModelPrice(float(value["input"]), float(value["output"]))
    input_price, output_price = value
    return ModelPrice(float(input_price), float(output_price))


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
        """Defaults overridden by a JSON or YAML mapping ``model: {input: $/1M, output: $/1M}``."""
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

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int, *, batch: bool = False) -> float:
        """The price of one answer in US dollars."""
        price = self.price(model)
        if price is None:
            if model not in self._warned:
                self._warned.add(model)
                log.warning("no price known for model %r: its cost is counted as 0", model)
            return 0.0
        cost = (prompt_tokens * price.input_per_mtok + completion_tokens * price.output_per_mtok) / 1e6
        return cost * BATCH_DISCOUNT if batch else cost
