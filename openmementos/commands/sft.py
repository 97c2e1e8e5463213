"""`openmementos sft`: one stage of the two-stage memento SFT."""

from __future__ import annotations

import typer

from openmementos.train.request import SFTRequest


def sft(request: SFTRequest) -> None:
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
    from openmementos.train.sft import run_sft

    summary = run_sft(request)
    if not summary.main_process:
        return
    losses = summary.losses
    loss_text = f", loss {losses[0]['loss']:.3f} -> {losses[-1]['loss']:.3f}" if losses else ""
    skipped = summary.rows_skipped_too_long
    skipped_text = f" ({skipped} rows over --max-length skipped)" if skipped else ""
    steps = f"{summary.rows_trained} rows, {summary.steps} steps"
    typer.echo(f"stage {request.stage}: {steps}{loss_text}{skipped_text}; saved to {request.out}")
    if request.stage == 1:
        typer.echo(f"next: openmementos sft --model {request.out} --data {request.data} --stage 2 --out OUT")
    else:
        typer.echo(f'next: openmementos generate --model {request.out} --prompt "..." --backend hf')
