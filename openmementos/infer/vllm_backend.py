"""The vLLM backend, restart variant: evict a block by restarting the request without it.

Stock vLLM has no public API to drop a middle span from a running request's KV cache. This backend
therefore generates until `<|summary_end|>` (a stop token), removes the finished block's content (and,
with `mask_delimiters`, its block delimiters) from the request's token list, and submits the shortened
list as a new request. With prefix caching, the KV of everything before the evicted block is reused;
the tokens after it (the block's memento and its delimiters) are prefilled again.

Differences from the reference (`openmementos.infer.hf`, identical to stage-2 training):

* the memento is re-encoded without its block in view, so the implicit KV channel of the memento
  (SPEC 5: what its KV absorbed from the block while it was written) is lost;
* positions are compacted: after a restart the memento sits right after the previous memento instead
  of after the gap the block leaves in training;
* each eviction costs a re-prefill of the memento (`recomputed_tokens` in the results) plus the
  partially filled KV page in front of it, since vLLM caches prefixes at page granularity.

Peak KV accounting counts what the request holds in vLLM: at the end of each round the prompt of the
round plus every token whose KV was computed (the last sampled token has none yet).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from openmementos.infer.result import GenerationResult
from openmementos.train.attention import DelimiterIds, visible_until


@dataclass
class RestartRequest:
    """One request of the restart variant: the token list resubmitted after every eviction."""

    problem: str
    prompt_ids: list[int]
    evict: bool
    mask_delimiters: bool = False
    context: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    rounds: int = 0
    blocks_evicted: int = 0
    peak_kv_tokens: int = 0
    recomputed_tokens: int = 0
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        self.context = list(self.prompt_ids)

    def absorb(
        self,
        new_tokens: Sequence[int],
        *,
        cached_tokens: int,
        stopped_on: int | None,
        delimiters: DelimiterIds,
        stop_ids: set[int],
        max_new_tokens: int,
    ) -> None:
        """Take one round's output; evict the block its `<|summary_end|>` closes, or finish."""
        new = list(new_tokens)
        if stopped_on is not None and (not new or new[-1] != stopped_on):
            new.append(stopped_on)  # engines that leave the stop token out of the output
        if self.rounds:
            # The previous round's last token is genuinely new; the rest of the miss is re-prefill.
            self.recomputed_tokens += max(0, len(self.context) - cached_tokens - 1)
        self.rounds += 1
        self.peak_kv_tokens = max(self.peak_kv_tokens, len(self.context) + len(new) - 1)
        self.context += new
        self.generated += new
        if new and new[-1] in stop_ids:
            self.finish_reason = "stop"
        elif len(self.generated) >= max_new_tokens:
            self.finish_reason = "length"
        elif self.evict and new and new[-1] == delimiters.summary_end:
            self._evict_closed_block(delimiters)
        else:
            self.finish_reason = "length"

    def _evict_closed_block(self, delimiters: DelimiterIds) -> None:
        import torch

        until = visible_until(
            torch.tensor(self.context),
            delimiters,
            mask_delimiters=self.mask_delimiters,
            response_start=len(self.prompt_ids),
        )
        keep = until > len(self.context) - 1
        if not bool(keep.all()):
            self.blocks_evicted += 1
            self.context = [t for t, kept in zip(self.context, keep.tolist(), strict=True) if kept]

    def result(self, tokenizer) -> GenerationResult:
        text_ids = self.generated[:-1] if self.finish_reason == "stop" else self.generated
        return GenerationResult(
            prompt=self.problem,
            text=tokenizer.decode(text_ids, skip_special_tokens=False),
            prompt_tokens=len(self.prompt_ids),
            tokens_generated=len(self.generated),
            blocks_evicted=self.blocks_evicted,
            peak_kv_tokens=self.peak_kv_tokens,
            peak_kv_tokens_without_eviction=len(self.prompt_ids) + len(self.generated) - 1,
            finish_reason=self.finish_reason or "length",
            backend="vllm-restart" if self.evict else "vllm",
            recomputed_tokens=self.recomputed_tokens,
        )


def generate_vllm(
    model: str,
    problems: Sequence[str],
    *,
    max_new_tokens: int,
    evict: bool = True,
    mask_delimiters: bool = False,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    engine_kwargs: dict | None = None,
) -> list[GenerationResult]:
    """Answer every problem on one vLLM engine; requests advance together, one round per eviction."""
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt

    from openmementos.infer.hf import stop_token_ids
    from openmementos.train.data import encode_prompt

    llm = LLM(model=model, enable_prefix_caching=True, seed=seed, **(engine_kwargs or {}))
    tokenizer = llm.get_tokenizer()
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    stops = stop_token_ids(tokenizer)
    requests = [
        RestartRequest(p, encode_prompt(tokenizer, p), evict=evict, mask_delimiters=mask_delimiters) for p in problems
    ]
    while active := [r for r in requests if r.finish_reason is None]:
        params = [
            SamplingParams(
                max_tokens=max_new_tokens - len(r.generated),
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                stop_token_ids=sorted(stops | ({delimiters.summary_end} if evict else set())),
                skip_special_tokens=False,
            )
            for r in active
        ]
        outputs = llm.generate([TokensPrompt(prompt_token_ids=r.context) for r in active], params, use_tqdm=False)
        for request, output in zip(active, outputs, strict=True):
            completion = output.outputs[0]
            stopped_on = completion.stop_reason if isinstance(completion.stop_reason, int) else None
            request.absorb(
                completion.token_ids,
                cached_tokens=output.num_cached_tokens or 0,
                stopped_on=stopped_on,
                delimiters=delimiters,
                stop_ids=stops,
                max_new_tokens=max_new_tokens,
            )
    return [r.result(tokenizer) for r in requests]
