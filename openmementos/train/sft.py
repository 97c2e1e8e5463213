"""Two-stage SFT on memento data with `transformers.Trainer` and our collator.

Stage 1 teaches the format with ordinary causal attention; it adds the delimiter tokens to the model.
Stage 2 starts from the stage-1 checkpoint and trains with memento attention (the 4D mask of
`openmementos.train.attention`), so the model learns to work from mementos alone once a block is
closed. Why not TRL's `SFTTrainer`: it treats `attention_mask` as a 2D padding mask (token counting,
padding-free batching, its own tokenisation and truncation), which a 4D per-example mask breaks, and
stage 1 and stage 2 should share one code path.

The output folder holds the model, the tokenizer, rolling checkpoints (an interrupted run resumes from
the newest one) and `memento_training.json` with the settings and the loss curve.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from openmementos.train.attention import DelimiterIds
from openmementos.train.data import MementoCollator, encode_conversations
from openmementos.train.special_tokens import prepare_model_and_tokenizer

TRAINING_RECORD = "memento_training.json"
REQUIRED_COLUMNS = ("problem", "response")


@dataclass(frozen=True)
class SFTConfig:
    """Settings of one SFT stage; the defaults are the published recipe (SPEC 5)."""

    model: str
    data: str
    stage: int
    out: Path
    epochs: float = 5.0
    lr: float = 8e-5
    warmup_ratio: float = 0.05
    max_length: int = 32768
    mask_delimiters: bool = False
    max_steps: int = -1
    batch_size: int = 1
    grad_accum: int = 1
    gradient_checkpointing: bool = False
    attn_implementation: str = "sdpa"
    save_steps: int = 500
    logging_steps: int = 10
    seed: int = 0


@dataclass
class SFTSummary:
    """What a finished stage reports (also written to `memento_training.json`)."""

    stage: int
    mask_delimiters: bool
    base_model: str
    data: str
    rows_trained: int
    rows_skipped_too_long: int
    added_tokens: list[dict]
    steps: int
    losses: list[dict] = field(default_factory=list)
    settings: dict = field(default_factory=dict)


def run_sft(config: SFTConfig) -> SFTSummary:
    """Train one stage and save the model, tokenizer and `memento_training.json` to `config.out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    if config.stage not in (1, 2):
        raise ValueError(f"--stage must be 1 or 2, not {config.stage}")
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForCausalLM.from_pretrained(config.model, attn_implementation=config.attn_implementation)
    if config.stage == 1:
        added = prepare_model_and_tokenizer(model, tokenizer, seed=config.seed)
        delimiters = DelimiterIds.from_tokenizer(tokenizer)
    else:
        added = []
        delimiters = _stage_one_delimiters(config.model, tokenizer)

    dataset = load_conversations(config.data, tokenizer)
    too_long = dataset.filter(lambda n: n > config.max_length, input_columns="length")
    dataset = dataset.filter(lambda n: n <= config.max_length, input_columns="length")
    if len(dataset) == 0:
        raise ValueError(f"no row of {config.data} fits in --max-length {config.max_length} tokens")
    if len(too_long):
        total = len(too_long) + len(dataset)
        print(f"skipping {len(too_long)} of {total} rows longer than {config.max_length} tokens", file=sys.stderr)

    use_bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(config.out),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        bf16=use_bf16,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_steps=config.save_steps,
        save_total_limit=2,
        report_to="none",
        remove_unused_columns=False,
        seed=config.seed,
    )
    collator = MementoCollator(
        pad_token_id=_pad_id(tokenizer),
        stage=config.stage,
        delimiters=delimiters,
        mask_delimiters=config.mask_delimiters,
        attn_implementation=config.attn_implementation,
        dtype=torch.bfloat16 if use_bf16 else model.dtype,
    )
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset.remove_columns("length"),
        data_collator=collator,
        processing_class=tokenizer,
    )
    resume = get_last_checkpoint(str(config.out)) if Path(config.out).is_dir() else None
    if resume:
        print(f"resuming from {resume}", file=sys.stderr)
    trainer.train(resume_from_checkpoint=resume)
    trainer.save_model(str(config.out))
    tokenizer.save_pretrained(str(config.out))

    summary = SFTSummary(
        stage=config.stage,
        mask_delimiters=config.mask_delimiters,
        base_model=config.model,
        data=config.data,
        rows_trained=len(dataset),
        rows_skipped_too_long=len(too_long),
        added_tokens=[asdict(init) for init in added],
        steps=trainer.state.global_step,
        losses=[{"step": e["step"], "loss": e["loss"]} for e in trainer.state.log_history if "loss" in e],
        settings={k: str(v) if isinstance(v, Path) else v for k, v in asdict(config).items()},
    )
    (Path(config.out) / TRAINING_RECORD).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def load_conversations(data: str, tokenizer):
    """Load the `default` config of a published folder or Hub repo and tokenise it (cached by datasets)."""
    import datasets

    try:
        rows = datasets.load_dataset(data, "default", split="train")
    except (FileNotFoundError, ValueError) as error:
        raise ValueError(
            f"cannot load the 'default' config of {data!r} ({error}); pass a folder written by "
            "`openmementos publish --to DIR` or a Hub dataset id"
        ) from error
    missing = [c for c in REQUIRED_COLUMNS if c not in rows.column_names]
    if missing:
        raise ValueError(f"{data!r} has no column {missing}; expected the published 'default' columns")

    def encode(batch: dict) -> dict:
        encoded = encode_conversations(tokenizer, batch["problem"], batch["response"])
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return rows.map(encode, batched=True, remove_columns=rows.column_names, desc="tokenising")


def read_training_record(model_dir: str | Path) -> dict | None:
    """The `memento_training.json` of a checkpoint folder, or None (a model not trained here)."""
    path = Path(model_dir) / TRAINING_RECORD
    return json.loads(path.read_text()) if path.is_file() else None


def _stage_one_delimiters(model: str, tokenizer) -> DelimiterIds:
    """The delimiter ids of a stage-1 output: stage 2 must start from a model that already knows them."""
    try:
        return DelimiterIds.from_tokenizer(tokenizer)
    except ValueError as error:
        raise ValueError(
            f"stage 2 starts from a stage-1 checkpoint, but {model!r} lacks the memento tokens; "
            "run `openmementos sft --stage 1` first"
        ) from error


def _pad_id(tokenizer) -> int:
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return candidate
    return 0
