"""Which dtype a training run loads its weights in, and which mixed precision the Trainer adds.

`--dtype` names the training precision:

* `bfloat16`: weights in bfloat16 (half the memory of float32), bfloat16 autocast on GPUs;
* `float16`: for GPUs without bfloat16: float32 weights with float16 autocast and loss scaling
  (pure float16 weights do not train stably, and the Trainer cannot unscale their gradients);
* `float32`: full precision, no autocast;
* `auto`: bfloat16 on a GPU that has it; otherwise the checkpoint's own dtype (float32 when it
  records none; a float16 checkpoint trains in float16 mixed precision on a GPU, float32 on CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from openmementos.train.request import DTYPES


@dataclass(frozen=True)
class Precision:
    """The resolved choice: the dtype weights load in, and the Trainer's autocast flags."""

    name: str
    weights: torch.dtype
    bf16: bool = False
    fp16: bool = False


def resolve_precision(
    requested: str, checkpoint_dtype: torch.dtype | str | None, *, cuda: bool, cuda_bf16: bool
) -> Precision:
    """Resolve `--dtype` for this machine (`cuda`: a GPU is present; `cuda_bf16`: it supports bfloat16)."""
    if requested not in DTYPES:
        raise ValueError(f"--dtype must be one of {', '.join(DTYPES)}, not {requested!r}")
    if requested == "auto":
        requested = _auto(_as_dtype(checkpoint_dtype), cuda=cuda, cuda_bf16=cuda_bf16)
    if requested == "bfloat16":
        if cuda and not cuda_bf16:
            raise ValueError("this GPU has no bfloat16 support; use --dtype float16 (mixed precision) or float32")
        return Precision("bfloat16", torch.bfloat16, bf16=cuda)
    if requested == "float16":
        if not cuda:
            raise ValueError(
                "--dtype float16 (mixed precision, loss scaling) needs a CUDA GPU; use bfloat16 or float32"
            )
        return Precision("float16", torch.float32, fp16=True)
    return Precision("float32", torch.float32)


def _auto(checkpoint: torch.dtype | None, *, cuda: bool, cuda_bf16: bool) -> str:
    if cuda and cuda_bf16:
        return "bfloat16"
    if checkpoint == torch.bfloat16 and not cuda:
        return "bfloat16"
    if checkpoint == torch.float16 and cuda:
        return "float16"
    return "float32"


def _as_dtype(value: torch.dtype | str | None) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    resolved = getattr(torch, str(value).removeprefix("torch."), None)
    return resolved if isinstance(resolved, torch.dtype) else None


def checkpoint_dtype(model: str) -> torch.dtype | str | None:
    """The dtype a checkpoint's config records (`dtype`, formerly `torch_dtype`), if any."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(model)
    return getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
