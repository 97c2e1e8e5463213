"""The reference backend: incremental decoding with block eviction on any HF causal LM.

`EvictingDecoder` feeds tokens into the model with a `DynamicCache`, remembering the original position
of every cached entry. Which entries a new query may see, and which entries leave the cache, both come
from `openmementos.train.attention.visible_until`, the function that also drives stage-2 training;
so decoding with eviction computes exactly what a stage-2 masked forward pass computes. Positions
are never renumbered: RoPE has already been applied to cached keys, and new tokens get their original
position ids, so the gaps left by evicted blocks stay gaps.

Sliding-window layers (Olmo 3, Phi-3 with a window) hold what their window and the memento rule both
allow: the decoder trims them to the window itself and evicts closed blocks from them as from the
full-attention layers, so each layer's cache is exactly the set of keys the training mask lets the
next query see. The prompt is the model's own chat template (`openmementos.chat`), as in training.

Requests are decoded one at a time (batch size 1): each request evicts different positions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable

import torch

from openmementos.chat import ChatFormat
from openmementos.infer.result import GenerationResult
from openmementos.train.attention import (
    NEVER,
    DelimiterIds,
    layer_windows,
    model_mask,
    per_layer_windows,
    visibility,
    visible_until,
)

Sampler = Callable[[torch.Tensor], int]


class EvictingDecoder:
    """Decode one sequence, dropping a block's KV entries once its memento is closed.

    Call `feed` with the next token ids (the prompt first, then one token at a time or in chunks);
    it returns the logits of the fed positions. With `evict=False` it is an ordinary cached decoder
    with the same accounting, which is the no-eviction baseline. KV figures are entries per layer,
    averaged over the layers (sliding-window layers hold at most their window).
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
        self.windows = layer_windows(model.config)
        self.layer_window = per_layer_windows(model.config)
        # Plain growing layers everywhere: this decoder, not the cache, trims sliding layers to their window.
        self.cache = DynamicCache()
        self._cache_kwarg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
        self.device = next(model.parameters()).device
        self.token_ids: list[int] = []
        empty = torch.empty(0, dtype=torch.long, device=self.device)
        self.positions: dict[int | None, torch.Tensor] = dict.fromkeys(self.windows.values(), empty)
        """Original positions of the entries the layers of each window hold (None: full attention)."""
        self.peak_kv_tokens = 0
        self.peak_kv_tokens_without_eviction = 0
        self.blocks_evicted = 0

    @property
    def cache_positions(self) -> torch.Tensor:
        """Positions held by the layers that hold the most (the full-attention ones, if any)."""
        return max(self.positions.values(), key=len)

    @property
    def kv_tokens(self) -> int:
        """Entries currently held in the KV cache, per layer (averaged over the layers)."""
        return self._per_layer({window: len(held) for window, held in self.positions.items()})

    @torch.inference_mode()
    def feed(self, token_ids: Iterable[int], *, last_logits_only: bool = False) -> torch.Tensor:
        """Run the model on the next tokens; returns their logits `(n, vocab)` (or `(1, vocab)`)."""
        chunk = list(token_ids)
        if not chunk:
            raise ValueError("feed needs at least one token")
        start = len(self.token_ids)
        self.token_ids.extend(chunk)
        positions = torch.arange(start, start + len(chunk), device=self.device)
        closes_memento = self.evict and self.delimiters.summary_end in chunk
        until = self._visible_until(closes_memento)
        keys = {window: torch.cat([held, positions]) for window, held in self.positions.items()}
        masks = {window: visibility(positions, k, until[k], window)[None, None] for window, k in keys.items()}
        output = self.model(
            input_ids=torch.tensor([chunk], device=self.device),
            position_ids=positions[None],
            attention_mask=model_mask(masks, self.windows, self.attn_implementation, self.model.dtype),
            use_cache=True,
            logits_to_keep=1 if last_logits_only else 0,
            **{self._cache_kwarg: self.cache},
        )
        self.positions = keys
        self.peak_kv_tokens = max(self.peak_kv_tokens, self.kv_tokens)
        baseline = {w: len(chunk) + (start if w is None else min(start, w - 1)) for w in self.positions}
        self.peak_kv_tokens_without_eviction = max(self.peak_kv_tokens_without_eviction, self._per_layer(baseline))
        last = start + len(chunk) - 1
        if closes_memento:
            self._evict(until, first_position=start, last_position=last)
        self._slide(next_position=last + 1)
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

    def _evict(self, until: torch.Tensor, *, first_position: int, last_position: int) -> None:
        """Drop the cached entries no later query may see (`visible_until` behind the next position)."""
        closed = until[(until >= first_position) & (until <= last_position)]
        self.blocks_evicted += int(closed.unique().numel())
        for window, held in self.positions.items():
            keep = until[held] > last_position
            if not bool(keep.all()):
                self._keep(window, keep.nonzero().squeeze(-1))

    def _slide(self, *, next_position: int) -> None:
        """Trim sliding-window layers to the keys the next query's window reaches (`key > query - window`)."""
        for window, held in self.positions.items():
            if window is not None:
                outside = int((held <= next_position - window).sum())  # positions are sorted: a prefix
                if outside:
                    self._keep(window, torch.arange(outside, len(held), device=self.device))

    def _keep(self, window: int | None, index: torch.Tensor) -> None:
        for layer, layer_window in zip(self.cache.layers, self.layer_window, strict=True):
            if layer_window == window:
                layer.keys = layer.keys.index_select(-2, index)
                layer.values = layer.values.index_select(-2, index)
        self.positions[window] = self.positions[window][index]

    def _per_layer(self, held: dict[int | None, int]) -> int:
        return round(sum(held[window] for window in self.layer_window) / len(self.layer_window))


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
    """End-of-turn ids: the chat template's end-of-turn token and the tokenizer's EOS."""
    return set(ChatFormat(tokenizer).end_of_turn_ids)


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
    """Answer one problem with the evicting decoder (the model's chat template, as in training)."""
    sampler = sampler or make_sampler(0.0, 1.0, 0)
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    chat = ChatFormat(tokenizer)
    prompt_ids = chat.encode_prompt(problem)
    decoder = EvictingDecoder(
        model, delimiters, evict=evict, mask_delimiters=mask_delimiters, response_start=len(prompt_ids)
    )
    logits = decoder.feed(prompt_ids, last_logits_only=True)[-1]
    generated: list[int] = []
    finish_reason = "length"
    while len(generated) < max_new_tokens:
        token = sampler(logits)
        generated.append(token)
        if token in chat.end_of_turn_ids:
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
        peak_kv_tokens_without_eviction=decoder.peak_kv_tokens_without_eviction,
        finish_reason=finish_reason,
        backend="hf",
    )
