"""Two-stage SFT on memento data with `transformers.Trainer` and our collator.

Stage 1 teaches the format with ordinary causal attention; it adds the delimiter tokens to the model.
Stage 2 starts from the stage-1 checkpoint and trains with memento attention, so the model learns to
work from mementos alone once a block is closed. By default stage 2 runs the block-structured
attention of `openmementos.train.block_attention` (FlexAttention on GPUs), which never builds a
sequence-by-sequence mask; `sdpa` / `eager` use the dense reference mask. Why not TRL's `SFTTrainer`:
it treats `attention_mask` as a 2D padding mask (token counting, padding-free batching, its own
tokenisation and truncation), which stage 2's inputs break, and both stages should share one code path.

Runs under `accelerate launch` / `torchrun` (DDP, FSDP, DeepSpeed through an accelerate config): the
Trainer shards the work; tokenisation runs on the main process first and only it writes the record.
The output folder holds the model, the tokenizer, rolling checkpoints (an interrupted run resumes from
the newest one) and `memento_training.json` with the settings and the loss curves.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from openmementos.train.attention import DelimiterIds, layer_windows
from openmementos.train.block_attention import BLOCKS, FLEX, register_memento_attention
from openmementos.train.data import MementoCollator, encode_conversations
from openmementos.train.precision import checkpoint_dtype, resolve_precision
from openmementos.train.record import TRAINING_RECORD
from openmementos.train.request import ATTENTION_CHOICES, SFTRequest
from openmementos.train.special_tokens import prepare_model_and_tokenizer

REQUIRED_COLUMNS = ("problem", "response")


CHECKPOINTING_ABOVE = 8192
"""Gradient checkpointing is on by default when `--max-length` exceeds this many tokens."""


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
    eval_losses: list[dict] = field(default_factory=list)
    rows_evaluated: int = 0
    settings: dict = field(default_factory=dict)
    main_process: bool = True  # False on the other processes of a distributed run (not written to the record)

    def record(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k != "main_process"}


def resolve_attention(requested: str, stage: int, *, cuda: bool) -> str:
    """The `attn_implementation` to load the model with.

    Stage 1 is causal: SDPA (or eager, if asked). Stage 2 `auto`: FlexAttention on GPUs, the
    block-structured PyTorch function elsewhere.
    """
    if requested not in ATTENTION_CHOICES:
        raise ValueError(f"--attn-implementation must be one of {', '.join(ATTENTION_CHOICES)}, not {requested!r}")
    if stage == 1:
        return "eager" if requested == "eager" else "sdpa"
    if requested == "auto":
        return FLEX if cuda and _has_flex_attention() else BLOCKS
    if requested == "flex" and not cuda:
        raise ValueError("--attn-implementation flex trains on CUDA GPUs only (no FlexAttention backward on CPU)")
    return {"blocks": BLOCKS, "flex": FLEX}.get(requested, requested)


def _has_flex_attention() -> bool:
    try:
        from torch.nn.attention import flex_attention  # noqa: F401  (torch >= 2.5)
    except ImportError:
        return False
    return True


def wants_checkpointing(config: SFTRequest) -> bool:
    if config.gradient_checkpointing is not None:
        return config.gradient_checkpointing
    return config.max_length > CHECKPOINTING_ABOVE


def run_sft(config: SFTRequest) -> SFTSummary:
    """Train one stage and save the model, tokenizer and `memento_training.json` to `config.out`."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    if config.stage not in (1, 2):
        raise ValueError(f"--stage must be 1 or 2, not {config.stage}")
    cuda = torch.cuda.is_available()
    attention = resolve_attention(config.attn_implementation, config.stage, cuda=cuda)
    precision = resolve_precision(
        config.dtype, checkpoint_dtype(config.model), cuda=cuda, cuda_bf16=cuda and torch.cuda.is_bf16_supported()
    )
    checkpointing = wants_checkpointing(config)
    args = TrainingArguments(
        output_dir=str(config.out),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        lr_scheduler_type="cosine",
        warmup_steps=config.warmup_ratio,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        activation_checkpointing=checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if checkpointing else None,
        bf16=precision.bf16,
        fp16=precision.fp16,
        eval_strategy="steps" if config.eval_split else "no",
        eval_steps=config.eval_steps or config.save_steps,
        prediction_loss_only=True,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_steps=config.save_steps,
        save_total_limit=2,
        report_to="none",
        remove_unused_columns=False,
        dataloader_pin_memory=cuda,
        use_cpu=not cuda,  # several CPU processes (accelerate launch / torchrun) then train together over gloo
        ddp_find_unused_parameters=False,
        seed=config.seed,
    )
    say = _main_process_printer(args)
    if checkpointing and config.gradient_checkpointing is None:
        say(
            f"gradient checkpointing on (--max-length {config.max_length} > {CHECKPOINTING_ABOVE}); "
            "--no-gradient-checkpointing turns it off"
        )
    say(f"stage {config.stage}: attention {attention}, weights in {precision.name}")

    register_memento_attention()
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    model = AutoModelForCausalLM.from_pretrained(config.model, attn_implementation=attention, dtype=precision.weights)
    use_cache = model.config.use_cache  # the Trainer turns it off; the saved model should not inherit that
    if config.stage == 1:
        added = prepare_model_and_tokenizer(model, tokenizer, seed=config.seed)
        delimiters = DelimiterIds.from_tokenizer(tokenizer)
    else:
        added = []
        delimiters = _stage_one_delimiters(config.model, tokenizer)

    with args.main_process_first(desc="tokenising"):
        train_rows, eval_rows = split_rows(load_rows(config.data), config.eval_split, config.seed)
        dataset, too_long = _fitting(tokenize_rows(train_rows, tokenizer), config.max_length)
        eval_dataset = _fitting(tokenize_rows(eval_rows, tokenizer), config.max_length)[0] if eval_rows else None
    if len(dataset) == 0:
        raise ValueError(f"no row of {config.data} fits in --max-length {config.max_length} tokens")
    if eval_dataset is not None and len(eval_dataset) == 0:
        raise ValueError(f"no held-out row fits in --max-length {config.max_length} tokens; raise --eval-split")
    if too_long:
        say(f"skipping {too_long} of {too_long + len(dataset)} rows longer than {config.max_length} tokens")

    collator = MementoCollator(
        pad_token_id=_pad_id(tokenizer),
        stage=config.stage,
        delimiters=delimiters,
        mask_delimiters=config.mask_delimiters,
        attn_implementation=attention,
        dtype=precision.weights,
        windows=layer_windows(model.config),
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        processing_class=tokenizer,
    )
    resume = get_last_checkpoint(str(config.out)) if Path(config.out).is_dir() else None
    if resume:
        say(f"resuming from {resume}")
    trainer.train(resume_from_checkpoint=resume)  # evaluates at the end too, when there is an eval split
    model.config.use_cache = use_cache
    trainer.save_model(str(config.out))

    history = trainer.state.log_history
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in config.model_dump().items()}
    summary = SFTSummary(
        stage=config.stage,
        mask_delimiters=config.mask_delimiters,
        base_model=config.model,
        data=config.data,
        rows_trained=len(dataset),
        rows_skipped_too_long=too_long,
        added_tokens=[asdict(init) for init in added],
        steps=trainer.state.global_step,
        losses=[{"step": e["step"], "loss": e["loss"]} for e in history if "loss" in e],
        eval_losses=[{"step": e["step"], "loss": e["eval_loss"]} for e in history if "eval_loss" in e],
        rows_evaluated=len(eval_dataset) if eval_dataset is not None else 0,
        settings={
            **settings,
            "attn_implementation": attention,
            "dtype": precision.name,
            "gradient_checkpointing": checkpointing,
            "world_size": args.world_size,
        },
        main_process=trainer.is_world_process_zero(),
    )
    if summary.main_process:
        tokenizer.save_pretrained(str(config.out))
        (Path(config.out) / TRAINING_RECORD).write_text(json.dumps(summary.record(), indent=2) + "\n")
    return summary


def load_rows(data: str):
    """The `default` config of a published folder or Hub repo, checked for the columns training needs."""
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
    return rows


def split_rows(rows, eval_split: float, seed: int):
    """Hold out `eval_split` rows (a fraction below 1, a count from 1 up); the same rows for the same seed.

    The split is made on the rows before tokenisation, so stage 1 and stage 2 hold out the same ones.
    """
    if not eval_split:
        return rows, None
    if eval_split < 0 or (eval_split >= 1 and eval_split != int(eval_split)):
        raise ValueError(f"--eval-split is a fraction in (0, 1) or a whole number of rows, not {eval_split}")
    size = eval_split if eval_split < 1 else int(eval_split)
    if size >= len(rows) or (size < 1 and round(size * len(rows)) < 1):
        raise ValueError(f"--eval-split {eval_split} leaves no row to train on or none to evaluate ({len(rows)} rows)")
    parts = rows.train_test_split(test_size=size, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def tokenize_rows(rows, tokenizer):
    """Tokenise rows into chat-template conversations with labels and lengths (cached by datasets)."""

    def encode(batch: dict) -> dict:
        encoded = encode_conversations(tokenizer, batch["problem"], batch["response"])
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]
        return encoded

    return rows.map(encode, batched=True, remove_columns=rows.column_names, desc="tokenising")


def _fitting(dataset, max_length: int):
    """The rows of at most `max_length` tokens (without the length column), and how many were longer."""
    fits = dataset.filter(lambda n: n <= max_length, input_columns="length")
    return fits.remove_columns("length"), len(dataset) - len(fits)


def _main_process_printer(args):
    def say(message: str) -> None:
        if args.process_index == 0:
            print(message, file=sys.stderr)

    return say


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
