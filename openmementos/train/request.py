"""The options of one SFT stage (`openmementos sft`); the defaults are the published recipe (SPEC 5)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal, get_args

from pydantic import Field

from openmementos.options import Cli, Request

Attention = Literal["auto", "blocks", "flex", "sdpa", "eager"]
ATTENTION_CHOICES: tuple[str, ...] = get_args(Attention)
Dtype = Literal["auto", "bfloat16", "float16", "float32"]
DTYPES: tuple[str, ...] = get_args(Dtype)
RUN_PANEL = "Run"


class SFTRequest(Request):
    """One stage of the two-stage memento SFT: stage 1 causal, stage 2 memento attention from stage 1."""

    model: str = Field(description="Stage 1: the base model (folder or Hub id). Stage 2: the stage-1 output folder.")
    data: str = Field(description="Published dataset: a folder from `openmementos publish --to DIR` or a Hub id.")
    stage: int = Field(
        ge=1, le=2, description="1: causal attention, adds the delimiter tokens. 2: memento attention, from stage 1."
    )
    out: Path = Field(description="Output folder: model, tokenizer, checkpoints, memento_training.json.")
    epochs: float = Field(5.0, gt=0, description="Passes over the data (published recipe: 5 per stage).")
    lr: float = Field(8e-5, gt=0, description="Peak learning rate, cosine schedule after the warmup.")
    warmup_ratio: float = Field(0.05, ge=0, le=1, description="Share of the steps spent warming up.")
    max_length: int = Field(32768, ge=1, description="Rows with more tokens are skipped (and counted).")
    mask_delimiters: bool = Field(
        False, description="Stage 2: also hide a closed block's <|block_start|>/<|block_end|> (Phi-style)."
    )
    attn_implementation: Attention = Field(
        "auto",
        description="Stage-2 memento attention. auto: flex on GPUs, blocks elsewhere. blocks: per-block SDPA over "
        "the visible keys (no full mask; CPU and GPU). flex: FlexAttention (GPU). sdpa / eager: the dense "
        "reference mask (seq x seq per row).",
    )
    dtype: Dtype = Field(
        "auto",
        description="auto (bfloat16 on GPUs that have it, else the checkpoint's), bfloat16, float16 (float32 weights, "
        "float16 mixed precision; GPU), float32.",
    )
    gradient_checkpointing: bool | None = Field(
        None, description="Trade compute for memory (needed for 32K-token rows). Default: on when --max-length > 8192."
    )
    batch_size: Annotated[int, Cli(panel=RUN_PANEL)] = Field(1, ge=1, description="Rows per device per step.")
    grad_accum: Annotated[int, Cli(panel=RUN_PANEL)] = Field(1, ge=1, description="Gradient accumulation steps.")
    max_steps: Annotated[int, Cli(panel=RUN_PANEL)] = Field(
        -1, description="Stop after this many optimiser steps (-1: run all epochs)."
    )
    eval_split: Annotated[float, Cli(panel=RUN_PANEL)] = Field(
        0.0, ge=0, description="Hold out rows for an eval loss: a fraction (0.02) or a count (200); 0: none."
    )
    eval_steps: Annotated[int | None, Cli(panel=RUN_PANEL)] = Field(
        None, ge=1, description="Evaluate every N steps (default: --save-steps) and at the end."
    )
    save_steps: Annotated[int, Cli(panel=RUN_PANEL)] = Field(
        500, ge=1, description="Checkpoint every N steps; a rerun resumes from the last."
    )
    logging_steps: Annotated[int, Cli(panel=RUN_PANEL)] = Field(10, ge=1, description="Log the loss every N steps.")
    seed: Annotated[int, Cli(panel=RUN_PANEL)] = Field(0, description="Seed for data order and new-token init noise.")
