"""Real-run options: --dtype, gradient checkpointing by default on long rows, an eval split, clear refusals."""

import json

import datasets
import pytest
import torch
from support.tiny_model import memento_rows, tiny_model_path, write_dataset
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.train.precision import resolve_precision
from openmementos.train.sft import resolve_attention, split_rows
from openmementos.train.special_tokens import prepare_model_and_tokenizer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


@pytest.mark.parametrize(
    ("requested", "checkpoint", "cuda", "bf16", "expected"),
    [
        ("auto", torch.float32, True, True, ("bfloat16", torch.bfloat16, True, False)),  # a GPU with bfloat16
        ("auto", torch.bfloat16, False, False, ("bfloat16", torch.bfloat16, False, False)),  # the checkpoint's
        ("auto", "float32", False, False, ("float32", torch.float32, False, False)),
        ("auto", None, False, False, ("float32", torch.float32, False, False)),
        ("auto", torch.float16, True, False, ("float16", torch.float32, False, True)),  # mixed, loss scaling
        ("auto", torch.float16, False, False, ("float32", torch.float32, False, False)),
        ("float32", torch.bfloat16, True, True, ("float32", torch.float32, False, False)),
        ("bfloat16", torch.float32, False, False, ("bfloat16", torch.bfloat16, False, False)),
    ],
)
def test_dtype_resolution(requested, checkpoint, cuda, bf16, expected):
    precision = resolve_precision(requested, checkpoint, cuda=cuda, cuda_bf16=bf16)
    assert (precision.name, precision.weights, precision.bf16, precision.fp16) == expected


def test_impossible_precisions_and_attentions_are_refused():
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        resolve_precision("float16", None, cuda=False, cuda_bf16=False)
    with pytest.raises(ValueError, match="no bfloat16"):
        resolve_precision("bfloat16", None, cuda=True, cuda_bf16=False)
    with pytest.raises(ValueError, match="--dtype must be one of"):
        resolve_precision("fp8", None, cuda=False, cuda_bf16=False)
    assert resolve_attention("auto", 2, cuda=False) == "memento_blocks"
    assert resolve_attention("auto", 2, cuda=True) == "memento_flex"
    assert resolve_attention("flex", 1, cuda=False) == "sdpa"  # stage 1 is causal either way
    assert resolve_attention("eager", 2, cuda=False) == "eager"
    with pytest.raises(ValueError, match="CUDA GPUs only"):
        resolve_attention("flex", 2, cuda=False)


def test_eval_split_holds_out_the_same_rows_for_the_same_seed():
    rows = datasets.Dataset.from_list([{"problem": str(i), "response": "r"} for i in range(20)])
    train, held_out = split_rows(rows, 0.25, seed=3)
    assert (len(train), len(held_out)) == (15, 5)
    assert list(split_rows(rows, 0.25, seed=3)[1]["problem"]) == list(held_out["problem"])
    assert sorted([*train["problem"], *held_out["problem"]]) == sorted(rows["problem"])
    assert len(split_rows(rows, 4, seed=0)[1]) == 4
    assert split_rows(rows, 0, seed=0) == (rows, None)
    for bad in (20, 2.5, -0.1, 0.01):
        with pytest.raises(ValueError, match="--eval-split"):
            split_rows(rows, bad, seed=0)


@pytest.fixture(scope="module")
def stage_one(tmp_path_factory):
    """A model that went through stage-1 preparation (the memento tokens exist) and a small dataset."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("stage1")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    prepare_model_and_tokenizer(model, tokenizer)
    model.save_pretrained(folder / "model")
    tokenizer.save_pretrained(folder / "model")
    return folder / "model", write_dataset(memento_rows(6, blocks_per_row=2), folder / "data")


def stage_two(stage_one, out, *options):
    model, data = stage_one
    arguments = ["sft", "--model", model, "--data", data, "--stage", "2", "--out", out, "--max-steps", "2", *options]
    return CliRunner().invoke(app, [str(a) for a in arguments])


def test_long_rows_get_gradient_checkpointing_and_bfloat16_trains_on_cpu(stage_one, tmp_path):
    from transformers import AutoConfig

    result = stage_two(stage_one, tmp_path / "ckpt", "--dtype", "bfloat16", "--eval-split", "2", "--eval-steps", "1")
    assert result.exit_code == 0, result.output
    assert "gradient checkpointing on (--max-length 32768 > 8192)" in result.output
    record = json.loads((tmp_path / "ckpt" / "memento_training.json").read_text())
    settings = record["settings"]
    assert settings["gradient_checkpointing"] is True and settings["dtype"] == "bfloat16"
    assert settings["attn_implementation"] == "memento_blocks" and settings["world_size"] == 1
    assert record["rows_trained"] == 4 and record["rows_evaluated"] == 2
    assert [e["step"] for e in record["eval_losses"]] == [1, 2] and all(e["loss"] > 0 for e in record["eval_losses"])
    config = AutoConfig.from_pretrained(tmp_path / "ckpt")
    assert config.dtype == torch.bfloat16 and config.use_cache is True

    result = stage_two(stage_one, tmp_path / "short", "--max-length", "4096", "--attn-implementation", "sdpa")
    assert result.exit_code == 0, result.output
    assert "gradient checkpointing on" not in result.output
    settings = json.loads((tmp_path / "short" / "memento_training.json").read_text())["settings"]
    assert settings["gradient_checkpointing"] is False and settings["attn_implementation"] == "sdpa"


def test_options_this_machine_cannot_honour_fail_clearly(stage_one, tmp_path):
    result = stage_two(stage_one, tmp_path / "a", "--dtype", "float16")
    assert result.exit_code == 1 and "needs a CUDA GPU" in result.output
    result = stage_two(stage_one, tmp_path / "b", "--attn-implementation", "flex")
    assert result.exit_code == 1 and "CUDA GPUs only" in result.output
    result = stage_two(stage_one, tmp_path / "c", "--dtype", "half")
    assert result.exit_code == 2 and "--dtype" in result.output
