"""Random-initialised tiny models of the paper's families, with BPE tokenizers trained offline.

Nothing is downloaded: each tokenizer is trained with `tokenizers` on a small built-in corpus, each
model is created from a config of its transformers architecture. Families:

* `llama`: a 2-layer Llama whose tokenizer knows the ChatML markers but has no chat template (the
  ChatML fallback);
* `qwen3`: a 2-layer Qwen3 with a Qwen3-style template (ChatML; the assistant turn re-rendered as
  `<think>\nreasoning\n</think>\n\nanswer`);
* `phi3`: a 2-layer Phi-3 (the architecture of Phi-4) with a Phi-4-style template (`<|im_sep|>` after
  the role, no newlines);
* `olmo3`: a 4-layer Olmo 3, three sliding-window layers (window `OLMO3_WINDOW`) and one full layer,
  with an Olmo-3-style template (a default system turn, a generation prompt that opens `<think>`, the
  last assistant turn closed by EOS).

The templates are written here to render what those models' own templates render for a single
exchange; they are not copies. No tokenizer knows the memento delimiters, exactly like a real base
model before `openmementos sft --stage 1` prepares it. Importing this module is cheap; building needs
the [train] extra (torch, transformers, tokenizers), imported inside the functions that use them.
"""

from __future__ import annotations

import atexit
import functools
import itertools
import shutil
import tempfile
from dataclasses import dataclass
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


QWEN3_STYLE_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}"
    "{%- set answer = message.content %}{%- set reasoning = '' %}"
    "{%- if '</think>' in answer %}"
    "{%- set reasoning = answer.split('</think>')[0].split('<think>')[-1].strip('\\n') %}"
    "{%- set answer = answer.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + answer + '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
PHI4_STYLE_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message.role + '<|im_sep|>' + message.content + '<|im_end|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant<|im_sep|>' }}{%- endif %}"
)
OLMO3_STYLE_TEMPLATE = (
    "{%- if messages[0].role != 'system' %}{{- '<|im_start|>system\\nYou are a careful assistant.<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' %}{{- '<|im_start|>assistant\\n' + message.content }}"
    "{{- eos_token if loop.last else '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>' }}{%- endif %}"
)

OLMO3_WINDOW = 32
"""The tiny Olmo 3's sliding window: short enough that test sequences (~200 tokens) outgrow it."""


@dataclass(frozen=True)
class TokenizerSpec:
    special_tokens: tuple[str, ...]
    eos: str
    pad: str
    template: str | None = None
    added_tokens: tuple[str, ...] = ()  # plain added tokens, as `<think>` is in the real tokenizers


TOKENIZERS = {
    "llama": TokenizerSpec(("<|endoftext|>", "<|im_start|>", "<|im_end|>"), "<|im_end|>", "<|endoftext|>"),
    "qwen3": TokenizerSpec(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"), "<|im_end|>", "<|endoftext|>", QWEN3_STYLE_TEMPLATE,
        ("<think>", "</think>"),
    ),
    "phi3": TokenizerSpec(
        ("<|endoftext|>", "<|im_start|>", "<|im_sep|>", "<|im_end|>"), "<|im_end|>", "<|endoftext|>",
        PHI4_STYLE_TEMPLATE,
    ),
    "olmo3": TokenizerSpec(
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"), "<|endoftext|>", "<|pad|>",
        OLMO3_STYLE_TEMPLATE, ("<think>", "</think>"),
    ),
}  # fmt: skip
FAMILIES = tuple(TOKENIZERS)


def build_tokenizer(vocab_size: int = 600, family: str = "llama"):
    """A byte-level BPE `PreTrainedTokenizerFast` with the family's special tokens and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    spec = TOKENIZERS[family]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(spec.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(corpus() + [" ".join(WORDS)] * 20, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token=spec.eos, pad_token=spec.pad, clean_up_tokenization_spaces=False
    )
    if spec.added_tokens:
        tokenizer.add_tokens(list(spec.added_tokens))
    tokenizer.chat_template = spec.template
    return tokenizer


def tiny_config(family: str, tokenizer, attn_implementation: str = "sdpa"):
    """A random-init-ready config of the family's architecture (hidden 128, head_dim 32, GQA)."""
    from transformers import LlamaConfig, Olmo3Config, Phi3Config, Qwen3Config

    common = {
        "vocab_size": len(tokenizer), "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 4096, "tie_word_embeddings": False,
        "bos_token_id": None, "eos_token_id": tokenizer.eos_token_id, "pad_token_id": tokenizer.pad_token_id,
        "attn_implementation": attn_implementation,
    }  # fmt: skip
    if family == "llama":
        return LlamaConfig(num_hidden_layers=2, head_dim=32, **common)
    if family == "qwen3":
        return Qwen3Config(num_hidden_layers=2, head_dim=32, **common)
    if family == "phi3":
        return Phi3Config(num_hidden_layers=2, original_max_position_embeddings=4096, sliding_window=None, **common)
    if family == "olmo3":
        return Olmo3Config(num_hidden_layers=4, sliding_window=OLMO3_WINDOW, **common)
    raise ValueError(f"unknown family {family!r}; choose from {FAMILIES}")


def build_tiny_model(out_dir: Path, *, seed: int = 0, attn_implementation: str = "sdpa", family: str = "llama") -> Path:
    """Save a random-init tiny model of `family` and its tokenizer to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    tokenizer = build_tokenizer(family=family)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(family, tokenizer, attn_implementation))
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


@functools.cache
def tiny_model_path(family: str = "llama") -> Path:
    """The tiny model of `family`, built once per process in a temporary folder removed at exit."""
    folder = Path(tempfile.mkdtemp(prefix=f"openmementos-tiny-{family}-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return build_tiny_model(folder / "model", family=family)


def write_dataset(rows: list[dict], folder: Path) -> Path:
    """Write rows as a one-shard parquet dataset that `datasets.load_dataset(folder, "default")` reads."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / "data" / "train-00000-of-00001.parquet")
    return folder


def memorised_memento_model(folder: Path, row: dict, steps: int = 40, family: str = "llama", **settings) -> Path:
    """Stage 1 then stage 2 on one memento row until the tiny model reproduces it (blocks, mementos).

    Greedy decoding of such a model writes real blocks and mementos, so eviction really happens.
    `settings` go to both stages' `SFTRequest` (e.g. `mask_delimiters=True`).
    """
    from openmementos.train.request import SFTRequest
    from openmementos.train.sft import run_sft

    data = write_dataset([row], folder / "data")
    fast = {"max_steps": steps, "lr": 3e-3, "batch_size": 1, "save_steps": 10**6, "logging_steps": steps, **settings}
    run_sft(SFTRequest(model=str(tiny_model_path(family)), data=str(data), stage=1, out=folder / "s1", **fast))
    run_sft(SFTRequest(model=str(folder / "s1"), data=str(data), stage=2, out=folder / "s2", **fast))
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
