"""End to end through the CLI: sft stage 1, sft stage 2, then generate with eviction."""

import json

import pytest
from support.tiny_model import memento_rows, tiny_model_path, write_dataset
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.format import parse_response

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def sft(model, data, stage, out, *extra):
    result = CliRunner().invoke(
        app,
        ["sft", "--model", str(model), "--data", str(data), "--stage", str(stage), "--out", str(out), *extra],
    )
    assert result.exit_code == 0, result.output
    return json.loads((out / "memento_training.json").read_text())


def test_two_stage_sft_then_generate_evicts_blocks(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    row = memento_rows(1, blocks_per_row=3)[0]
    data = write_dataset([row], tmp_path / "published")
    fast = ["--max-steps", "40", "--lr", "3e-3", "--logging-steps", "10", "--max-length", "4096"]

    stage1 = sft(tiny_model_path(), data, 1, tmp_path / "s1", *fast)
    assert [t["token"] for t in stage1["added_tokens"]][:4] == [
        "<|block_start|>", "<|block_end|>", "<|summary_start|>", "<|summary_end|>",
    ]  # fmt: skip
    stage2 = sft(tmp_path / "s1", data, 2, tmp_path / "s2", *fast)
    for record in (stage1, stage2):
        losses = [entry["loss"] for entry in record["losses"]]
        assert losses[-1] < 0.5 * losses[0], losses
    assert stage2["added_tokens"] == [] and stage2["stage"] == 2
    assert stage2["losses"][0]["loss"] < stage1["losses"][0]["loss"]  # stage 2 starts from stage 1

    out = tmp_path / "generated.jsonl"
    result = CliRunner().invoke(
        app,
        ["generate", "--model", str(tmp_path / "s2"), "--prompt", row["problem"], "--backend", "hf",
         "--max-new-tokens", "300", "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [generated] = [json.loads(line) for line in out.read_text().splitlines()]
    # The memorised response comes back even though its blocks left the cache as it went.
    assert parse_response(generated["text"]) == parse_response(row["response"])
    assert generated["blocks_evicted"] == 3 and generated["finish_reason"] == "stop"
    assert generated["peak_kv_tokens"] < generated["peak_kv_tokens_without_eviction"]


def test_stage_two_refuses_a_model_without_memento_tokens(tmp_path):
    data = write_dataset(memento_rows(2), tmp_path / "published")
    result = CliRunner().invoke(
        app,
        ["sft", "--model", str(tiny_model_path()), "--data", str(data), "--stage", "2", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 1
    assert "stage 2 starts from a stage-1 checkpoint" in result.output


def test_missing_columns_and_prompts_get_clear_errors(tmp_path):
    data = write_dataset([{"question": "q", "answer": "a"}], tmp_path / "bad")
    result = CliRunner().invoke(
        app,
        ["sft", "--model", str(tiny_model_path()), "--data", str(data), "--stage", "1", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 1 and "no column ['problem', 'response']" in result.output
    result = CliRunner().invoke(app, ["generate", "--model", str(tiny_model_path())])
    assert result.exit_code == 2 and "--prompt" in result.output
