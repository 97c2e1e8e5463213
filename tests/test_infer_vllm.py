"""The vLLM backend (restart variant) on the tiny model. Runs in the separate venv: `make test-vllm`."""

import atexit
import importlib.util
import os
import shutil
import tempfile

import pytest

pytestmark = pytest.mark.vllm
if importlib.util.find_spec("vllm") is None:
    pytest.skip("vLLM is not installed (run `make test-vllm`)", allow_module_level=True)

# vLLM reads its settings at import; keep its caches out of the home folder and start it fast on CPU.
_CACHE = tempfile.mkdtemp(prefix="openmementos-vllm-")
atexit.register(shutil.rmtree, _CACHE, ignore_errors=True)
os.environ.setdefault("VLLM_CACHE_ROOT", _CACHE)
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_CACHE, "inductor"))
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")

import json  # noqa: E402

from support.tiny_model import memento_rows, memorised_memento_model  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from openmementos.cli import app  # noqa: E402
from openmementos.format import parse_response  # noqa: E402


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    row = memento_rows(1, blocks_per_row=3)[0]
    return memorised_memento_model(tmp_path_factory.mktemp("memorised"), row), row


def generate(model, row, backend, out, *extra):
    result = CliRunner().invoke(
        app,
        ["generate", "--model", str(model), "--prompt", row["problem"], "--backend", backend,
         "--max-new-tokens", "300", "--dtype", "float32", "--out", str(out), *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [line] = out.read_text().splitlines()
    return json.loads(line)


def test_vllm_matches_hf_without_eviction_and_restarts_with_it(memorised, tmp_path):
    model, row = memorised
    hf_plain = generate(model, row, "hf", tmp_path / "hf_plain.jsonl", "--no-evict")
    vllm_plain = generate(model, row, "vllm", tmp_path / "vllm_plain.jsonl", "--no-evict")
    assert vllm_plain["text"] == hf_plain["text"]  # same greedy tokens from the same weights
    assert vllm_plain["peak_kv_tokens"] == vllm_plain["peak_kv_tokens_without_eviction"]
    assert vllm_plain["peak_kv_tokens_without_eviction"] == hf_plain["peak_kv_tokens_without_eviction"]

    hf = generate(model, row, "hf", tmp_path / "hf.jsonl")
    restart = generate(model, row, "vllm", tmp_path / "vllm.jsonl")
    assert parse_response(hf["text"]) == parse_response(row["response"]) and hf["blocks_evicted"] == 3
    assert restart["backend"] == "vllm-restart" and restart["blocks_evicted"] >= 1
    # Up to the first memento's end the two backends see the same context, so they agree.
    first_memento_end = row["response"].index("<|summary_end|>")
    assert restart["text"][:first_memento_end] == hf["text"][:first_memento_end]
    # Each restart re-prefills the memento without its block: that is the variant's cost.
    assert restart["recomputed_tokens"] > 0
    assert restart["peak_kv_tokens"] < restart["peak_kv_tokens_without_eviction"]
