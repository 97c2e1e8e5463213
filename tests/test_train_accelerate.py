"""`accelerate launch` with two CPU processes (gloo) trains stage 2 as one data-parallel run."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from support.tiny_model import memento_rows, tiny_model_path, write_dataset

from openmementos.train.special_tokens import prepare_model_and_tokenizer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_cpu_processes_train_stage_two_together(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    accelerate = Path(sys.executable).with_name("accelerate")
    openmementos = shutil.which("openmementos", path=str(Path(sys.executable).parent))
    if not accelerate.exists() or openmementos is None:
        pytest.skip("needs the accelerate and openmementos scripts of this environment")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path())
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path())
    prepare_model_and_tokenizer(model, tokenizer)
    model.save_pretrained(tmp_path / "s1")
    tokenizer.save_pretrained(tmp_path / "s1")
    data = write_dataset(memento_rows(8, blocks_per_row=2), tmp_path / "data")

    command = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(free_port()),
        openmementos, "sft", "--model", str(tmp_path / "s1"), "--data", str(data), "--stage", "2",
        "--out", str(tmp_path / "s2"), "--max-steps", "3", "--batch-size", "2", "--max-length", "4096",
        "--logging-steps", "1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    record = json.loads((tmp_path / "s2" / "memento_training.json").read_text())
    assert record["settings"]["world_size"] == 2 and record["steps"] == 3
    assert record["settings"]["attn_implementation"] == "memento_blocks"
    # 3 steps x 2 rows x 2 processes = 12 rows: one and a half passes over the 8 rows.
    state = json.loads(next((tmp_path / "s2").glob("checkpoint-*/trainer_state.json")).read_text())
    assert state["epoch"] == 1.5
    assert done.stdout.count("stage 2: 8 rows, 3 steps") == 1  # one summary, from the main process
