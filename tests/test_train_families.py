"""The paper's model families end to end: `sft` stage 1, stage 2, then `generate --backend hf`, per family.

Each tiny model memorises one memento row; greedy generation then writes its blocks and mementos again
while the decoder evicts every closed block, so what generation reproduces was computed with the
blocks gone, exactly as stage 2 trained it (Olmo 3: through its sliding-window layers as well).
"""

import json

import pytest
from support.tiny_model import FAMILIES, memento_rows, tiny_model_path, write_dataset
from typer.testing import CliRunner

from openmementos.chat import ChatFormat
from openmementos.cli import app

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")


def invoke(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "llama"])  # llama: test_train_sft_cli.py
def test_stage_one_stage_two_then_generate(family, tmp_path):
    from transformers import AutoTokenizer

    row = memento_rows(1, blocks_per_row=3)[0]
    data = write_dataset([row] * 4, tmp_path / "published")
    phi = ["--mask-delimiters"] if family == "phi3" else []  # the Phi recipe evicts the delimiters too
    # Olmo 3 keeps the default --max-length (32768): gradient checkpointing comes on, with a notice.
    length = [] if family == "olmo3" else ["--max-length", "4096"]
    fast = ["--max-steps", "40", "--lr", "3e-3", "--batch-size", "4", "--logging-steps", "40", *phi, *length]
    for stage, model in ((1, tiny_model_path(family)), (2, tmp_path / "s1")):
        output = invoke(
            "sft", "--model", model, "--data", data, "--stage", stage, "--out", tmp_path / f"s{stage}", *fast
        )
        assert ("gradient checkpointing on" in output) == (family == "olmo3")
    record = json.loads((tmp_path / "s2" / "memento_training.json").read_text())
    assert record["settings"]["attn_implementation"] == "memento_blocks"
    assert record["settings"]["gradient_checkpointing"] == (family == "olmo3")
    assert record["mask_delimiters"] == (family == "phi3") and record["losses"][-1]["loss"] < 0.5

    out = tmp_path / "generated.jsonl"
    invoke("generate", "--model", tmp_path / "s2", "--prompt", row["problem"], "--max-new-tokens", 300, "--out", out)
    [generated] = [json.loads(line) for line in out.read_text().splitlines()]
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "s2")
    trained = ChatFormat(tokenizer).encode(row["problem"], row["response"]).response_ids
    assert generated["text"] == tokenizer.decode(trained[:-1])  # the response as the template renders it
    assert generated["blocks_evicted"] == 3 and generated["finish_reason"] == "stop"
    assert generated["peak_kv_tokens"] < generated["peak_kv_tokens_without_eviction"]
