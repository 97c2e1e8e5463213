"""From the published demo dataset to a model: `sft` stage 1, stage 2, then `generate --backend hf`."""

import json

import pyarrow.parquet as pq
import pytest
from support.tiny_model import tiny_model_path
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.format import SUMMARY_END

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

MAX_LENGTH = 3500
"""The tiny model's 600-token vocabulary spends ~2,300 to ~16,600 tokens on a demo row: keep the shortest."""
FAST = ["--max-steps", "4", "--lr", "2e-3", "--logging-steps", "1", "--max-length", str(MAX_LENGTH)]
NEW_TOKENS = 48


def test_two_stage_sft_on_the_demo_dataset_then_generate(demo_dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    problems = pq.read_table(demo_dataset / "data", columns=["problem"]).column("problem").to_pylist()
    runner = CliRunner()
    records = {}
    for stage, model in ((1, tiny_model_path()), (2, tmp_path / "s1")):
        out = tmp_path / f"s{stage}"
        arguments = ["--model", str(model), "--data", str(demo_dataset), "--stage", str(stage), "--out", str(out)]
        result = runner.invoke(app, ["sft", *arguments, *FAST])
        assert result.exit_code == 0, result.output
        record = records[stage] = json.loads((out / "memento_training.json").read_text())
        assert record["stage"] == stage and record["steps"] == 4
        assert record["rows_trained"] >= 1 and record["rows_trained"] + record["rows_skipped_too_long"] == len(problems)
        assert f"{record['rows_skipped_too_long']} rows over --max-length skipped" in result.output
        losses = [entry["loss"] for entry in record["losses"]]
        assert len(losses) == 4 and losses[-1] < losses[0], losses
    assert len(records[1]["added_tokens"]) == 4 and records[2]["added_tokens"] == []
    assert records[2]["losses"][0]["loss"] < records[1]["losses"][0]["loss"]  # stage 2 starts from stage 1

    problem = problems[0]
    out = tmp_path / "generated.jsonl"
    result = runner.invoke(
        app,
        ["generate", "--model", str(tmp_path / "s2"), "--prompt", problem, "--backend", "hf",
         "--max-new-tokens", str(NEW_TOKENS), "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "KV cache per problem" in result.output
    [generated] = [json.loads(line) for line in out.read_text().splitlines()]
    assert generated["prompt"] == problem and generated["backend"] == "hf"
    assert 1 <= generated["tokens_generated"] <= NEW_TOKENS
    if generated["finish_reason"] == "length":
        assert generated["tokens_generated"] == NEW_TOKENS
    # Every fed token is one KV entry: the prompt and each generated token but the last (never fed back).
    fed = generated["prompt_tokens"] + generated["tokens_generated"] - 1
    assert generated["peak_kv_tokens_without_eviction"] == fed
    # Four steps per stage teach no blocks yet; whatever the model wrote, eviction only follows a closed memento.
    assert generated["blocks_evicted"] <= generated["text"].count(SUMMARY_END)
    freed = generated["peak_kv_tokens_without_eviction"] - generated["peak_kv_tokens"]
    assert freed >= 0 and (freed > 0) == (generated["blocks_evicted"] > 0)
