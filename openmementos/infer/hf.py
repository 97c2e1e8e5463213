"""The reference backend: incremental decoding with block eviction on any HF causal LM.

`EvictingDecoder` feeds tokens into the model with a `DynamicCache`, remembering the original position
of every cached entry. Which entries a new query may see, and which entries leave the cache, both come
from `openmementos.train.attention.visible_until`, the function that also builds the stage-2 training
mask; so decoding with eviction computes exactly what a stage-2 masked forward pass computes. Positions
are never renumbered: RoPE has already been applied to cached keys, and new tokens get their original
position ids, so the gaps left by evicted blocks stay gaps.

Requests are decoded one at a time (batch size 1): each request evicts different positions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch

from openmementos.infer.result import GenerationResult
from openmementos.train.attention import NEVER, DelimiterIds, to_model_mask, visibility, visible_until
from openmementos.train.data import encode_prompt
from openmementos.train.special_tokens import CHAT_END

Sampler = Callable[[torch.Tensor], int]


class EvictingDecoder:
    """Decode one sequence, dropping a block's KV entries once its memento is closed.

    Call `feed` with the next token ids (the prompt first, then one token at a time or in chunks);
    it returns the logits of the fed positions. With `evict=False` it is an ordinary cached decoder
    with the same accounting, which is the no-eviction baseline.
    """

    def __init__(
        self,
        model,
        delimiters: DelimiterIds,
        *,
        evict: bool = True,
        mask_delimiters: bool = False,
        response_start: int = 0,
    ) -> None:
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        self.model = model
        self.delimiters = delimiters
        self.evict = evict
        self.mask_delimiters = mask_delimiters
        self.response_start = response_start
        self.attn_implementation = model.config._attn_implementation
        if self.attn_implementation not in ("sdpa", "eager"):
            raise ValueError(
                f"the evicting decoder passes explicit 4D masks; load the model with attn_implementation='sdpa' "
                f"or 'eager' (it uses {self.attn_implementation!r})"
            )
        self.cache = DynamicCache(config=model.config)
        unsupported = {type(layer).__name__ for layer in self.cache.layers if type(layer) is not DynamicLayer}
        if unsupported:
            raise ValueError(
                f"block eviction needs full-attention KV layers; this model's cache has {sorted(unsupported)}"
            )
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.device = next(model.parameters()).device
        self.token_ids: list[int] = []
        self.cache_positions = torch.empty(0, dtype=torch.long, device=self.device)
        self.peak_kv_tokens = 0
        self.blocks_evicted = 0

    @property
    def kv_tokens(self) -> int:
        """Entries currently held in the KV cache."""
        return self.cache_positions.numel()

    @torch.inference_mode()
    def feed(self, token_ids: Iterable[int], *, last_logits_only: bool = False) -> torch.Tensor:
        """Run the model on the next tokens; returns their logits `(n, vocab)` (or `(1, vocab)`)."""
        chunk = list(token_ids)
        if not chunk:
            raise ValueError("feed needs at least one token")
        start = len(self.token_ids)
        self.token_ids.extend(chunk)
        positions = torch.arange(start, start + len(chunk), device=self.device)
        key_positions = torch.cat([self.cache_positions, positions])
        closes_memento = self.evict and self.delimiters.summary_end in chunk
        until = self._visible_until(closes_memento)
        mask = visibility(positions, key_positions, until[key_positions])[None, None]
        mask = to_model_mask(mask, self.attn_implementation, self.model.dtype)
        output = self.model(
            input_ids=torch.tensor([chunk], device=self.device),
            position_ids=positions[None],
            attention_mask=mask,
            use_cache=True,
            logits_to_keep=1 if last_logits_only else 0,
            **{self._cache_kwarg: self.cache},
        )
        self.cache_positions = key_positions
        self.peak_kv_tokens = max(self.peak_kv_tokens, self.kv_tokens)
        if closes_memento:
            self._evict(until, last_position=start + len(chunk) - 1)
        return output.logits[0]

    def _visible_until(self, closes_memento: bool) -> torch.Tensor:
        """`visible_until` of every token fed so far.

        Only a `<|summary_end|>` can make a token's value finite, and cached entries that survived
        eviction are all `NEVER`; so the full computation (and eviction) is needed only for chunks
        holding one.
        """
        if not closes_memento:
            return torch.full((len(self.token_ids),), NEVER, dtype=torch.long, device=self.device)
        return visible_until(
            torch.tensor(self.token_ids, device=self.device),
            self.delimiters,
            mask_delimiters=self.mask_delimiters,
            response_start=self.response_start,
        )

    def _evict(self, until: torch.Tensor, *, last_position: int) -> None:
        """Drop the cached entries no later query may see (`visible_until` behind the next position)."""
        cached_until = until[self.cache_positions]
        keep = cached_until > last_position
        if bool(keep.all()):
            return
        self.blocks_evicted += int(cached_until[~keep].unique().numel())
        keep_index = keep.nonzero().squeeze(-1)
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(-2, keep_index)
            layer.values = layer.values.index_select(-2, keep_index)
        self.cache_positions = self.cache_positions[keep_index]


def make_sampler(temperature: float, top_p: float, seed: int) -> Sampler:
    """Greedy when `temperature` is 0, else temperature + nucleus sampling with a seeded generator."""
    generator = torch.Generator().manual_seed(seed)

    def sample(logits: torch.Tensor) -> int:
        if temperature <= 0:
            return int(logits.argmax())
        probs = torch.softmax(logits.float().cpu() / temperature, dim=-1)
        if top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            outside = sorted_probs.cumsum(-1) - sorted_probs >= top_p
            sorted_probs[outside] = 0.0
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
        return int(torch.multinomial(probs, 1, generator=generator))

    return sample


def stop_token_ids(tokenizer) -> set[int]:
    """End-of-turn ids: `<|im_end|>` and the tokenizer's EOS."""
    ids = {tokenizer.convert_tokens_to_ids(CHAT_END)}
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def generate_hf(
    model,
    tokenizer,
    problem: str,
    *,
    max_new_tokens: int,
    evict: bool = True,
    mask_delimiters: bool = False,
    sampler: Sampler | None = None,
) -> GenerationResult:
    """Answer one problem with the evicting decoder (ChatML prompt, as in training)."""
    sampler = sampler or make_sampler(0.0, 1.0, 0)
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    stops = stop_token_ids(tokenizer)
    prompt_ids = encode_prompt(tokenizer, problem)
    decoder = EvictingDecoder(
        model, delimiters, evict=evict, mask_delimiters=mask_delimiters, response_start=len(prompt_ids)
    )
    logits = decoder.feed(prompt_ids, last_logits_only=True)[-1]
    generated: list[int] = []
    finish_reason = "length"
    while len(generated) < max_new_tokens:
        token = sampler(logits)
        generated.append(token)
        if token in stops:
            finish_reason = "stop"
            break
        if len(generated) == max_new_tokens:
            break
        logits = decoder.feed([token], last_logits_only=True)[-1]
    text_ids = generated[:-1] if finish_reason == "stop" else generated
    return GenerationResult(
        prompt=problem,
        text=tokenizer.decode(text_ids, skip_special_tokens=False),
        prompt_tokens=len(prompt_ids),
        tokens_generated=len(generated),
        blocks_evicted=decoder.blocks_evicted,
        peak_kv_tokens=decoder.peak_kv_tokens,
        peak_kv_tokens_without_eviction=len(decoder.token_ids),
        finish_reason=finish_reason,
        backend="hf",
    )
