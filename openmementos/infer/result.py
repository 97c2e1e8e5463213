"""What a generation backend reports for one request."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class GenerationResult:
    """One request's output text and KV-cache accounting.

    `peak_kv_tokens` is the largest number of tokens the request held in the KV cache at once;
    `peak_kv_tokens_without_eviction` is what an ordinary decoder would have held (every token whose KV
    was computed). For models with sliding-window layers both count entries per layer, averaged over
    the layers (a sliding layer holds at most its window, with or without eviction). `tokens_generated`
    counts sampled tokens, the stop token included.
    `recomputed_tokens` counts KV entries computed a second time (the vLLM restart variant re-prefills
    each memento after evicting its block; the HF backend never recomputes).
    """

    prompt: str
    text: str
    prompt_tokens: int
    tokens_generated: int
    blocks_evicted: int
    peak_kv_tokens: int
    peak_kv_tokens_without_eviction: int
    finish_reason: Literal["stop", "length"]
    backend: str
    recomputed_tokens: int = 0

    @property
    def kv_ratio(self) -> float:
        return self.peak_kv_tokens_without_eviction / self.peak_kv_tokens if self.peak_kv_tokens else 1.0

    def to_json(self) -> dict:
        return {**asdict(self), "kv_ratio": round(self.kv_ratio, 4)}
