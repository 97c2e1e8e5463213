"""The segment stage's options: what the blocks depend on (`SegmentSettings`) and how the stage runs."""

from __future__ import annotations

import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, model_validator

from openmementos.llm.options import LLM_PANEL, EndpointOptions
from openmementos.options import Cli, ExecutorOptions, InDir, Request
from openmementos.segment.partition import Objective
from openmementos.tokens import DEFAULT_ENCODING

STAGE = "segment"
BLOCKS_PANEL = "Blocks"


class Scorer(StrEnum):
    heuristic = "heuristic"
    llm = "llm"


class SegmentSettings(Request):
    """What the blocks depend on besides the boundary scores (recorded in the manifest)."""

    objective: Annotated[Objective, Cli(panel=BLOCKS_PANEL)] = Field(
        Objective.published,
        description="J to maximise. published: sum(cut scores) / K - λ·CV, the first block counting as a cut of 0 "
        "(the MEMENTO recipe: each block must earn its place; ~9 blocks of ~1,150 tokens on OpenThoughts "
        "traces). per-cut: sum / (K - 1) - λ·CV, the mean over the cuts only (almost always 2 blocks).",
    )
    lam: Annotated[float, Cli(panel=BLOCKS_PANEL)] = Field(
        0.5, ge=0, alias="lambda", description="Weight λ of the block-size CV in J."
    )
    min_block_tokens: Annotated[int, Cli(panel=BLOCKS_PANEL)] = Field(
        200, ge=0, description="Every block has at least this many tokens."
    )
    max_block_tokens: Annotated[int | None, Cli(panel=BLOCKS_PANEL)] = Field(
        None,
        ge=1,
        description="Hard cap on block tokens (default: none, as in the published recipe). Traces that cannot "
        "meet it are quarantined.",
    )
    tokenizer: Annotated[str, Cli(panel=BLOCKS_PANEL)] = Field(
        DEFAULT_ENCODING, description="Token counts: a tiktoken encoding or a path to a tokenizer.json."
    )
    limit: int | None = Field(None, ge=0, description="Segment only the first N traces, in shard order (trial runs).")

    @model_validator(mode="after")
    def _check_cap(self) -> SegmentSettings:
        if self.max_block_tokens is not None and self.max_block_tokens < max(self.min_block_tokens, 1):
            raise ValueError(
                f"--max-block-tokens {self.max_block_tokens} is below --min-block-tokens {self.min_block_tokens}"
            )
        return self

    def settings(self) -> SegmentSettings:
        """Only the fields of `SegmentSettings` (a request carries more)."""
        return SegmentSettings(**{name: getattr(self, name) for name in SegmentSettings.model_fields})

    def options(self) -> dict[str, Any]:
        return self.settings().model_dump()


class SegmentRequest(SegmentSettings, EndpointOptions, ExecutorOptions):
    """Segment a `download` folder into OUT_DIR (or explain one trace with `explain`)."""

    in_dir: InDir = Field(
        description="Output folder of `download` (SourceTrace shards). With --explain: a `segment` output folder, "
        "or a `download` folder to segment that one trace on the fly (heuristic scorer, the options given)."
    )
    out_dir: Annotated[Path | None, Cli(argument=True, metavar="OUT_DIR | TRACE_ID")] = Field(
        None,
        description="Where SegmentedTrace shards, quarantine/ and manifest.json go. With --explain: the trace to "
        "explain (none: list some trace ids).",
    )
    scorer: Scorer = Field(
        Scorer.heuristic, description="Boundary scorer: rule-based (offline, deterministic) or an LLM over windows."
    )
    explain: bool = Field(
        False,
        description="Print one trace's blocks, cut scores, sizes and rules, and the best J at nearby block counts; "
        "write nothing. Without a TRACE_ID: list some trace ids.",
    )
    estimate: bool = Field(
        False,
        description="Only print what --scorer llm would send and cost (requests, prompt/completion/cached "
        "tokens, US$ per trace and for the whole input); sends nothing, writes nothing, needs no API key.",
    )
    model: Annotated[str | None, Cli(panel=LLM_PANEL)] = Field(None, description="Scoring LLM (--scorer llm).")
    window: Annotated[int, Cli(panel=LLM_PANEL)] = Field(16, ge=2, description="Boundaries per LLM request.")
    second_window: Annotated[int | None, Cli(panel=LLM_PANEL)] = Field(
        None,
        ge=2,
        description="Also score with windows of this size (coprime to --window, e.g. 11) and average into half points.",
    )

    def secret_required(self, name: str) -> bool | None:
        return super().secret_required(name) if self.scorer is Scorer.llm else None

    @model_validator(mode="after")
    def _check_scorer(self) -> SegmentRequest:
        if self.scorer is Scorer.llm and not self.explain:
            if not self.model:
                raise ValueError("--scorer llm needs --model")
            if self.second_window is not None and math.gcd(self.window, self.second_window) != 1:
                raise ValueError("use a --second-window coprime to --window (e.g. 16 and 11)")
        if not self.explain and self.out_dir is None:
            raise ValueError("give OUT_DIR (or --explain [TRACE_ID])")
        return self

    @property
    def trace_id(self) -> str | None:
        """With --explain, the second argument names a trace, not an output folder."""
        return str(self.out_dir) if self.explain and self.out_dir is not None else None
