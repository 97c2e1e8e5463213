"""`openmementos generate` input handling and output, on the prepared tiny model."""

import json

import pytest
from support.tiny_model import tiny_model_path
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.train.special_tokens import prepare_model_and_tokenizer


@pytest.fixture(scope="module")
def prepared_model(tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("prepared")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    prepare_model_and_tokenizer(model, tokenizer)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def run(*args):
    return CliRunner().invoke(app, ["generate", *map(str, args)], env={"COLUMNS": "400"})


def test_prompts_file_gives_one_json_line_per_problem(prepared_model, tmp_path):
    prompts = tmp_path / "problems.jsonl"
    prompts.write_text('{"problem": "Find x."}\n\n{"prompt": "Add 2 and 3."}\n"What is 7*6?"\n')
    result = run("--model", prepared_model, "--prompts", prompts, "--max-new-tokens", 5, "--temperature", 0.7)
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert [line["prompt"] for line in lines] == ["Find x.", "Add 2 and 3.", "What is 7*6?"]
    for line in lines:
        assert line["backend"] == "hf" and 1 <= line["tokens_generated"] <= 5
        assert line["peak_kv_tokens_without_eviction"] == line["prompt_tokens"] + line["tokens_generated"] - 1


def test_plain_text_prompts_and_bad_input(prepared_model, tmp_path):
    text = tmp_path / "problems.txt"
    text.write_text("first problem\nsecond problem\n")
    out = tmp_path / "out" / "results.jsonl"
    result = run("--model", prepared_model, "--prompts", text, "--max-new-tokens", 2, "--no-evict", "--out", out)
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 2

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"problem": "ok"}\n{"problem": \n')
    result = run("--model", prepared_model, "--prompts", broken)
    assert result.exit_code == 1 and "broken.jsonl:2 is not JSON" in result.output

    result = run("--model", tiny_model_path(), "--prompt", "x")  # never prepared: no delimiter tokens
    assert result.exit_code == 1 and "openmementos sft --stage 1" in result.output
