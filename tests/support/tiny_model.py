"""A random-initialised 2-layer Llama with a BPE tokenizer trained offline, for tests and benchmarks.

Nothing is downloaded: the tokenizer is trained with `tokenizers` on a small built-in corpus, the
model is created from a config. The tokenizer knows the ChatML markers but not the memento
delimiters, exactly like a real base model before `openmementos sft --stage 1` prepares it.
Importing this module is cheap; building the model or tokenizer needs the [train] extra (torch,
transformers, tokenizers), imported inside the functions that use them.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import shutil
import tempfile
from pathlib import Path

from openmementos.format import render_response

_TEXT = """
block start begin section step end finish done summary summarize brief recap overview complete
we need to find the value of x so let us compute check whether this works therefore answer is
equation solve factor prime number sum product divide multiply root square integer case first
second then thus hence because if not and or with from into where when which gives equals
"""
WORDS = tuple(_TEXT.split())


def corpus(n_lines: int = 400) -> list[str]:
    """Deterministic pseudo-sentences over WORDS and digits, enough to train a ~600-token BPE."""
    cycle = itertools.cycle(WORDS)
    lines = []
    for i in range(n_lines):
        words = [next(cycle) for _ in range(3 + i % 9)]
        lines.append(f"{' '.join(words)} {i * 37 % 1000} = {i % 17}^2 + x_{i % 5}.")
    return lines


def memento_rows(n_rows: int, blocks_per_row: int = 3) -> list[dict]:
    """Rows shaped like the published `default` config, with short blocks and mementos."""
    lines = corpus()
    rows = []
    for r in range(n_rows):
        picks = [lines[(r * 7 + b * 3) % len(lines)] for b in range(2 * blocks_per_row)]
        blocks = [f"{picks[2 * b]} {picks[2 * b + 1]}" for b in range(blocks_per_row)]
        mementos = [f"x_{b} = {r + b}, case {b} done." for b in range(blocks_per_row)]
        rows.append(
            {
                "problem": f"Find x such that x^2 = {r * r}.",
                "response": render_response(blocks, mementos, f"The answer is {r}."),
                "domain": "math",
                "source": "tiny",
                "difficulty": r % 10,
            }
        )
    return rows


def build_tokenizer(vocab_size: int = 600):
    """A byte-level BPE `PreTrainedTokenizerFast` with ChatML markers, trained in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus() + [" ".join(WORDS)] * 20, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        clean_up_tokenization_spaces=False,
    )


def build_tiny_model(out_dir: Path, *, seed: int = 0, attn_implementation: str = "sdpa") -> Path:
    """Save a random-init 2-layer Llama (hidden 128, head_dim 32, GQA) and its tokenizer to `out_dir`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = build_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation=attn_implementation,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@functools.cache
def tiny_model_path() -> Path:
    """The tiny model, built once per process in a temporary folder removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix="openmementos-tiny-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return build_tiny_model(folder / "model")


def write_dataset(rows: list[dict], folder: Path) -> Path:
    """Write rows as a one-shard parquet dataset that `datasets.load_dataset(folder, "default")` reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    return folder


def memorised_memento_model(folder: Path, row: dict, steps: int = 40) -> Path:
    """Stage 1 then stage 2 on one memento row until the tiny model reproduces it (blocks, mementos).

    Greedy decoding of such a model writes real blocks and mementos, so eviction really happens.
    """
    from openmementos.train.sft import SFTConfig, run_sft

    data = write_dataset([row] * 4, folder / "data")
    fast = {"max_steps": steps, "lr": 3e-3, "batch_size": 4, "save_steps": 10**6, "logging_steps": steps}
    run_sft(SFTConfig(model=str(tiny_model_path()), data=str(data), stage=1, out=folder / "s1", **fast))
    run_sft(SFTConfig(model=str(folder / "s1"), data=str(data), stage=2, out=folder / "s2", **fast))
    return folder / "s2"


def memento_tokenizer_model(out_dir: Path, *, seed: int = 0) -> Path:
    """The tiny Llama with the four delimiters added (as `sft --stage 1` prepares it), untrained.

    Its greedy output is arbitrary but deterministic; tests force the block structure on it.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openmementos.train.special_tokens import prepare_model_and_tokenizer

    source = build_tiny_model(Path(out_dir) / "base", seed=seed)
    model = AutoModelForCausalLM.from_pretrained(source)
    tokenizer = AutoTokenizer.from_pretrained(source)
    prepare_model_and_tokenizer(model, tokenizer, seed=seed)
    out_dir = Path(out_dir) / "model"
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
