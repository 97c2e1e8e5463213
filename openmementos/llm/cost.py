"""What a run will send and cost, before it sends anything: the shared shape of every stage's estimate.

A stage's estimator (`annotate.estimate`, `segment.estimate`) builds the requests it would send for a
sample of its input, counts them, and returns a :class:`CostEstimate`; :meth:`CostEstimate.render` is
what `--estimate` and `run --check` print.

Cached prompt tokens follow OpenAI's published rule for automatic prefix caching: the prefix a request
shares with an earlier one counts once it reaches 1,024 tokens, in 128-token steps (:func:`cacheable`).
vLLM and SGLang cache any shared prefix, so there the cached share is a little larger. The Batch API
figure is half the standard price, without a prefix cache discount.
"""

from __future__ import annotations

from dataclasses import dataclass

from openmementos.llm.pricing import BATCH_DISCOUNT, ModelPrice, cached_share

MESSAGE_OVERHEAD_TOKENS = 4
"""Tokens a chat template adds per message (role markers), as OpenAI counts them."""
ESTIMATE_SAMPLE = 200
"""Traces whose requests are built and counted; the averages are scaled to the whole input."""
CACHE_MIN_TOKENS = 1024
CACHE_STEP_TOKENS = 128
"""OpenAI's automatic prefix caching: prefixes of at least 1,024 tokens, cached in 128-token steps."""


@dataclass
class StepEstimate:
    """Expected requests and tokens of one recipe step (per trace, or in all)."""

    requests: float = 0.0
    prompt_tokens: float = 0.0
    cached_prompt_tokens: float = 0.0
    completion_tokens: float = 0.0

    def add(self, weight: float, prompt: int, cached: int, completion: int) -> None:
        self.requests += weight
        self.prompt_tokens += weight * prompt
        self.cached_prompt_tokens += weight * cached
        self.completion_tokens += weight * completion

    def __add__(self, other: StepEstimate) -> StepEstimate:
        return StepEstimate(
            self.requests + other.requests,
            self.prompt_tokens + other.prompt_tokens,
            self.cached_prompt_tokens + other.cached_prompt_tokens,
            self.completion_tokens + other.completion_tokens,
        )

    def scaled(self, factor: float) -> StepEstimate:
        return StepEstimate(
            self.requests * factor,
            self.prompt_tokens * factor,
            self.cached_prompt_tokens * factor,
            self.completion_tokens * factor,
        )


@dataclass(frozen=True)
class Costs:
    """US dollars, three ways: list price, with cached prefixes at the cached rate, Batch API."""

    standard: float
    cached: float
    batch: float


@dataclass(frozen=True)
class CostEstimate:
    """What running a stage over its input will send and cost."""

    model: str
    what: str
    """The recipe in a few words ("judge per-trace", "windows of 16 and 11")."""
    traces: int
    """Traces the run would process (the selected input, under `--limit`)."""
    counted: int
    """Traces whose requests were built and counted (the averages come from these)."""
    per_trace: dict[str, StepEstimate]
    """Expected requests and tokens per trace, by step."""
    price: ModelPrice | None
    """The model's price (None: unknown, e.g. a self-hosted model: cost 0)."""
    assumed: str = ""
    """What the estimate had to assume, in a sentence (pass rates, re-asks, sizes)."""
    basis: str = ""
    """Where the traces counted came from, when not from the stage's input itself."""
    batch_api: bool = True
    """Whether the stage can send through the Batch API (the third price column)."""

    def trace_total(self) -> StepEstimate:
        return sum(self.per_trace.values(), StepEstimate())

    def total(self) -> StepEstimate:
        return self.trace_total().scaled(self.traces)

    def costs(self, usage: StepEstimate) -> Costs:
        if self.price is None:
            return Costs(0.0, 0.0, 0.0)
        prompt, completion = round(usage.prompt_tokens), round(usage.completion_tokens)
        standard = self.price.cost(prompt, completion)
        cached = self.price.cost(prompt, completion, round(usage.cached_prompt_tokens))
        return Costs(standard, cached, standard * BATCH_DISCOUNT)

    def render(self) -> list[str]:
        """A table per trace, the whole input's tokens and cost three ways, and what was assumed."""
        if not self.trace_total().requests:
            return [f"{self.traces:,} traces with {self.what}: no LLM requests, $0"]
        lines = [
            f"estimate for {self.traces:,} traces with {self.model}, {self.what} "
            f"(requests built and counted for {self.counted:,} of them; nothing sent)"
            + (f"; {self.basis}" if self.basis else ""),
            f"{'per trace':<12}{'requests':>10}{'prompt tok':>12}{'cached tok':>12}{'completion tok':>16}",
        ]
        rows = [(step, usage) for step, usage in self.per_trace.items() if usage.requests]
        for step, usage in [*rows, ("total", self.trace_total())]:
            lines.append(
                f"{step:<12}{usage.requests:>10.2f}{usage.prompt_tokens:>12,.0f}{usage.cached_prompt_tokens:>12,.0f}"
                f"{usage.completion_tokens:>16,.0f}"
            )
        total = self.total()
        share = cached_share(round(total.cached_prompt_tokens), round(total.prompt_tokens))
        lines.append(
            f"whole input: {total.requests:,.0f} requests, {total.prompt_tokens:,.0f} prompt tokens "
            f"({total.cached_prompt_tokens:,.0f} cached, {share}), {total.completion_tokens:,.0f} completion tokens"
        )
        if self.price is None:
            lines.append(f"cost: no price known for {self.model} (give --price-in/--price-out): counted as $0")
        else:
            price = self.price
            cached_rate = (
                "no cached rate" if price.cached_input_per_mtok is None else f"${price.cached_input_per_mtok}/M cached"
            )
            batch = f"{'Batch API':>12}" if self.batch_api else ""
            lines.append(
                f"{'US$':<12}{'standard':>12}{'cached prefixes':>17}{batch}   "
                f"({self.model}: ${price.input_per_mtok}/M in, {cached_rate}, ${price.output_per_mtok}/M out)"
            )
            for label, usage in (("per trace", self.trace_total()), ("whole input", total)):
                costs = self.costs(usage)
                batch = f"{costs.batch:>12,.4f}" if self.batch_api else ""
                lines.append(f"{label:<12}{costs.standard:>12,.4f}{costs.cached:>17,.4f}{batch}")
        assumed = [self.assumed] if self.assumed else []
        assumed.append("cached: prefixes of >= 1,024 tokens shared with an earlier request (OpenAI's rule)")
        if self.batch_api:
            assumed.append("Batch API: half price, no cache discount")
        lines.append("assumed: " + "; ".join(assumed))
        return lines


def cacheable(prefix_tokens: int) -> int:
    """Prompt tokens a provider caches of a shared prefix this long (OpenAI's rule, see the module doc)."""
    return prefix_tokens // CACHE_STEP_TOKENS * CACHE_STEP_TOKENS if prefix_tokens >= CACHE_MIN_TOKENS else 0
