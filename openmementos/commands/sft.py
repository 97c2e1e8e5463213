"""`openmementos sft`: one stage of the two-stage memento SFT."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def sft(
    model: Annotated[
        str,
        typer.Option(help="Stage 1: the base model (folder or Hub id). Stage 2: the stage-1 output folder."),
    ],
    data: Annotated[
        str,
        typer.Option(help="Published dataset: a folder from `openmementos publish --to DIR` or a Hub id."),
    ],
    stage: Annotated[
        int,
        typer.Option(
            min=1,
            max=2,
            help="1: causal attention, adds the delimiter tokens. 2: memento attention, from a stage-1 output.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output folder: model, tokenizer, checkpoints, memento_training.json.")],
    epochs: Annotated[float, typer.Option(help="Passes over the data (published recipe: 5 per stage).")] = 5.0,
    lr: Annotated[float, typer.Option(help="Peak learning rate, cosine schedule with 5% warmup.")] = 8e-5,
    max_length: Annotated[int, typer.Option(help="Rows with more tokens are skipped (and counted).")] = 32768,
    mask_delimiters: Annotated[
        bool,
        typer.Option(help="Stage 2: also hide a closed block's <|block_start|>/<|block_end|> (Phi-style)."),
    ] = False,
    max_steps: Annotated[int, typer.Option(help="Stop after this many optimiser steps (-1: run all epochs).")] = -1,
    batch_size: Annotated[int, typer.Option(help="Rows per device per step.")] = 1,
    grad_accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    gradient_checkpointing: Annotated[
        bool | None,
        typer.Option(
            help="Trade compute for memory (needed for 32K-token rows). Default: on when --max-length > 8192."
        ),
    ] = None,
    attn_implementation: Annotated[
        str,
        typer.Option(
            help="Stage-2 memento attention. auto: flex on GPUs, blocks elsewhere. blocks: per-block SDPA over "
            "the visible keys (no full mask; CPU and GPU). flex: FlexAttention (GPU). sdpa / eager: the dense "
            "reference mask (seq x seq per row)."
        ),
    ] = "auto",
    dtype: Annotated[
        str,
        typer.Option(
            help="auto (bfloat16 on GPUs that have it, else the checkpoint's), bfloat16, float16 (float32 weights, "
            "float16 mixed precision; GPU), float32."
        ),
    ] = "auto",
    eval_split: Annotated[
        float,
        typer.Option(help="Hold out rows for an eval loss: a fraction (0.02) or a count (200); 0: none."),
    ] = 0.0,
    eval_steps: Annotated[
        int | None, typer.Option(help="Evaluate every N steps (default: --save-steps) and at the end.")
    ] = None,
    save_steps: Annotated[int, typer.Option(help="Checkpoint every N steps; a rerun resumes from the last.")] = 500,
    logging_steps: Annotated[int, typer.Option(help="Log the loss every N steps.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed for data order and new-token init noise.")] = 0,
) -> None:
    """Fine-tune a causal LM on memento data (stage 1, then stage 2 from its output).

    Rows of the dataset's `default` config become conversations in the model's own chat template
    (user = problem, assistant = response; ChatML if the tokenizer has none); the loss covers the
    assistant tokens only. Stage 1 adds <|block_start|>, <|block_end|>, <|summary_start|> and
    <|summary_end|> as special tokens, initialised from related words. Stage 2 trains with memento
    attention: after a memento's <|summary_end|>, later tokens no longer see that block's content, with
    the original position ids, exactly as `openmementos generate` evicts it (sliding-window layers see
    the window and that rule). Several GPUs (or CPU processes): `accelerate launch [--config_file
    fsdp.yaml] "$(which openmementos)" sft ...` (see the README).

    Example: openmementos sft --model Qwen/Qwen3-8B --data out/published --stage 1 --out ckpt/s1
    then: openmementos sft --model ckpt/s1 --data out/published --stage 2 --out ckpt/s2
    """
    from openmementos.train.precision import DTYPES
    from openmementos.train.sft import ATTENTION_CHOICES, SFTConfig, run_sft

    if attn_implementation not in ATTENTION_CHOICES:
        raise typer.BadParameter(f"choose {', '.join(ATTENTION_CHOICES)}", param_hint="--attn-implementation")
    if dtype not in DTYPES:
        raise typer.BadParameter(f"choose {', '.join(DTYPES)}", param_hint="--dtype")
    config = SFTConfig(
        model=model,
        data=data,
        stage=stage,
        out=out,
        epochs=epochs,
        lr=lr,
        max_length=max_length,
        mask_delimiters=mask_delimiters,
        max_steps=max_steps,
        batch_size=batch_size,
        grad_accum=grad_accum,
        gradient_checkpointing=gradient_checkpointing,
        attn_implementation=attn_implementation,
        dtype=dtype,
        eval_split=eval_split,
        eval_steps=eval_steps,
        save_steps=save_steps,
        logging_steps=logging_steps,
        seed=seed,
    )
    try:
        summary = run_sft(config)
    except ValueError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from error
    if not summary.main_process:
        return
    losses = summary.losses
    loss_text = f", loss {losses[0]['loss']:.3f} -> {losses[-1]['loss']:.3f}" if losses else ""
    skipped = summary.rows_skipped_too_long
    skipped_text = f" ({skipped} rows over --max-length skipped)" if skipped else ""
    steps = f"{summary.rows_trained} rows, {summary.steps} steps"
    typer.echo(f"stage {stage}: {steps}{loss_text}{skipped_text}; saved to {out}")
    if stage == 1:
        typer.echo(f"next: openmementos sft --model {out} --data {data} --stage 2 --out OUT")
    else:
        typer.echo(f'next: openmementos generate --model {out} --prompt "..." --backend hf')
