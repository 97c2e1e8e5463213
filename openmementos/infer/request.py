"""The options of `openmementos generate`."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from openmementos.options import Request


class Backend(StrEnum):
    hf = "hf"
    vllm = "vllm"


class VllmMode(StrEnum):
    """How the vLLM backend drops a finished block."""

    evict = "evict"
    """In-engine eviction by the openmementos plugin: the same attention as stage-2 training."""
    restart = "restart"
    """The ablation: cut the block and re-prefill the memento without it (any vLLM)."""


class GenerateRequest(Request):
    """Answer problems with a memento model, evicting each block once its memento is written."""

    model: str = Field(description="A memento model folder (the stage-2 output) or Hub id.")
    prompt: list[str] = Field([], description="A problem to answer (repeat the option for several).")
    prompts: Path | None = Field(
        None,
        description='Problems file: JSONL with a "problem" (or "prompt") field per line, else one problem per line.',
    )
    backend: Backend = Field(
        Backend.hf,
        description="hf: exact in-cache eviction (reference, same math as stage-2 training). "
        "vllm: the same eviction inside vLLM (the openmementos plugin), batched.",
    )
    vllm_mode: VllmMode = Field(
        VllmMode.evict,
        description="With --backend vllm. evict: in-engine eviction, identical to hf. restart: the ablation "
        "(cut the block, re-prefill the memento without it; works on any vLLM).",
    )
    max_new_tokens: int = Field(4096, ge=1, description="Generation budget per problem.")
    evict: bool = Field(True, description="Drop finished blocks from the KV cache (--no-evict: the baseline).")
    mask_delimiters: bool | None = Field(
        None, description="Evict block delimiters too; default: what the model was trained with in stage 2."
    )
    temperature: float = Field(0.0, ge=0, description="0 = greedy.")
    top_p: float = Field(1.0, ge=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, description="Sampling seed.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto (hf: bfloat16 on GPU, float32 on CPU; vllm decides), float32, bfloat16, float16."
    )
    out: Path | None = Field(None, description="Write one JSON result per line here (default: stdout).")

    @model_validator(mode="after")
    def _some_problem(self) -> GenerateRequest:
        if not self.prompt and self.prompts is None:
            raise ValueError("give --prompt TEXT or --prompts FILE")
        return self
