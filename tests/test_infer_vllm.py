"""The vLLM backend on the tiny model: in-engine eviction equals the HF reference. Runs in `make test-vllm`.

Float32 on CPU, greedy: the plugin must give, token for token, what `--backend hf` gives, on outputs
that open and close several blocks (a trained tiny model writing them, or the delimiters forced at
fixed steps on an untrained one), with and without --mask-delimiters, with many requests in a batch,
and when a small KV pool preempts requests. The restart variant (ablation) and `serve` are covered too.
"""

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

import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from support.forced_tokens import as_extra_args, block_script, forcing_sampler  # noqa: E402
from support.tiny_model import memento_rows, memento_tokenizer_model, memorised_memento_model  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from openmementos.cli import app  # noqa: E402
from openmementos.format import parse_response  # noqa: E402
from openmementos.infer.hf import EvictingDecoder, generate_hf, stop_token_ids  # noqa: E402
from openmementos.infer.vllm_backend import evicting_engine, evicting_result  # noqa: E402
from openmementos.infer.vllm_plugin.core import REPORT_KEY  # noqa: E402
from openmementos.train.attention import DelimiterIds, memento_attention_mask  # noqa: E402
from openmementos.train.data import encode_prompt  # noqa: E402


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    row = memento_rows(1, blocks_per_row=3)[0]
    return memorised_memento_model(tmp_path_factory.mktemp("memorised"), row), row


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    """An untrained tiny model that knows the delimiters: its greedy text is arbitrary but deterministic."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = memento_tokenizer_model(tmp_path_factory.mktemp("untrained"))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, attn_implementation="sdpa", dtype=torch.float32).eval()
    return path, model, tokenizer


def generate(model, row, backend, out, *extra):
    result = CliRunner().invoke(
        app,
        ["generate", "--model", str(model), "--prompt", row["problem"], "--backend", backend,
         "--max-new-tokens", "300", "--dtype", "float32", "--out", str(out), *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [line] = out.read_text().splitlines()
    return json.loads(line)


@pytest.mark.parametrize("mask", [[], ["--mask-delimiters"]], ids=["delimiters-kept", "delimiters-masked"])
def test_generate_with_vllm_evicts_in_the_engine_exactly_like_hf(memorised, tmp_path, mask):
    model, row = memorised
    hf = generate(model, row, "hf", tmp_path / "hf.jsonl", *mask)
    vllm = generate(model, row, "vllm", tmp_path / "vllm.jsonl", *mask)
    assert parse_response(hf["text"]) == parse_response(row["response"]) and hf["blocks_evicted"] == 3
    assert vllm["backend"] == "vllm" and vllm["recomputed_tokens"] == 0
    for key in ("text", "tokens_generated", "blocks_evicted", "peak_kv_tokens", "peak_kv_tokens_without_eviction"):
        assert vllm[key] == hf[key], key
    assert vllm["peak_kv_tokens"] < vllm["peak_kv_tokens_without_eviction"]


def test_no_eviction_and_the_restart_ablation_still_work(memorised, tmp_path):
    model, row = memorised
    hf_plain = generate(model, row, "hf", tmp_path / "hf_plain.jsonl", "--no-evict")
    vllm_plain = generate(model, row, "vllm", tmp_path / "vllm_plain.jsonl", "--no-evict")
    assert vllm_plain["text"] == hf_plain["text"]  # same greedy tokens from the same weights
    assert vllm_plain["peak_kv_tokens"] == vllm_plain["peak_kv_tokens_without_eviction"]
    assert vllm_plain["peak_kv_tokens_without_eviction"] == hf_plain["peak_kv_tokens_without_eviction"]

    hf = generate(model, row, "hf", tmp_path / "hf.jsonl")
    restart = generate(model, row, "vllm", tmp_path / "restart.jsonl", "--vllm-mode", "restart")
    assert restart["backend"] == "vllm-restart" and restart["blocks_evicted"] >= 1
    # Up to the first memento's end the two see the same context, so they agree.
    first_memento_end = row["response"].index("<|summary_end|>")
    assert restart["text"][:first_memento_end] == hf["text"][:first_memento_end]
    # Each restart re-prefills the memento without its block: that is the variant's cost.
    assert restart["recomputed_tokens"] > 0
    assert restart["peak_kv_tokens"] < restart["peak_kv_tokens_without_eviction"]


def forced_batch(delimiters: DelimiterIds, n: int) -> tuple[list[str], list[dict[int, int]]]:
    """`n` problems (two share a prompt, so its cached pages are shared) with different block layouts."""
    problems = [f"Find x such that x^2 = {i}." for i in range(n)]
    problems[-1] = problems[0]
    scripts = [
        block_script(delimiters, blocks=2 + i % 3, block_tokens=30 + 13 * i, memento_tokens=4 + i, answer_tokens=8)
        for i in range(n)
    ]
    return problems, scripts


def check_against_reference(untrained, problems, scripts, outputs, *, mask_delimiters, block_size, max_new_tokens):
    """Every output equals the HF reference: tokens, logprobs, evictions, peaks, and KV held per eviction."""
    _, model, tokenizer = untrained
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    for problem, script, output in zip(problems, scripts, outputs, strict=True):
        prompt = encode_prompt(tokenizer, problem)
        completion = output.outputs[0]
        ids = list(completion.token_ids)
        report = output.kv_transfer_params[REPORT_KEY]

        reference = generate_hf(
            model,
            tokenizer,
            problem,
            max_new_tokens=max_new_tokens,
            mask_delimiters=mask_delimiters,
            sampler=forcing_sampler(script),
        )
        result = evicting_result(problem, len(prompt), output, tokenizer, stop_token_ids(tokenizer))
        assert result.text == reference.text
        assert (result.blocks_evicted, result.peak_kv_tokens) == (reference.blocks_evicted, reference.peak_kv_tokens)
        assert result.blocks_evicted >= 2

        # Logprobs of every step equal the reference decoder's (where the script lets the model choose).
        decoder = EvictingDecoder(model, delimiters, mask_delimiters=mask_delimiters, response_start=len(prompt))
        logits = decoder.feed(prompt, last_logits_only=True)[-1]
        for step, token in enumerate(ids):
            if step not in script:
                expected = torch.log_softmax(logits.float(), -1)[token].item()
                assert completion.logprobs[step][token].logprob == pytest.approx(expected, abs=1e-4), step
            logits = decoder.feed([token], last_logits_only=True)[-1]

        # After each eviction the request holds exactly what the stage-2 mask leaves visible, in whole pages.
        sequence = torch.tensor(prompt + ids)
        mask = memento_attention_mask(
            sequence, delimiters, mask_delimiters=mask_delimiters, response_start=len(prompt)
        )[0, 0]
        closings = [i for i in range(len(prompt), len(sequence) - 1) if sequence[i] == delimiters.summary_end]
        visible = [int(mask[c + 1, : c + 1].sum()) for c in closings]
        assert report["kv_tokens_after_eviction"] == visible
        assert report["kv_blocks_after_eviction"] == [math.ceil(v / block_size) for v in visible]


def run_forced(llm, problems, scripts, *, mask_delimiters, max_new_tokens):
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    tokenizer = llm.get_tokenizer()
    params = [
        SamplingParams(
            max_tokens=max_new_tokens,
            temperature=0.0,
            logprobs=0,
            stop_token_ids=sorted(stop_token_ids(tokenizer)),
            skip_special_tokens=False,
            extra_args={"memento_evict": True, "memento_mask_delimiters": mask_delimiters, **as_extra_args(s)},
        )
        for s in scripts
    ]
    prompts = [TokensPrompt(prompt_token_ids=encode_prompt(tokenizer, p)) for p in problems]
    return llm.generate(prompts, params, use_tqdm=False)


def free_blocks(llm) -> tuple[int, int]:
    pool = llm.llm_engine.engine_core.engine_core.scheduler.kv_cache_manager.block_pool
    return pool.get_num_free_blocks(), pool.num_gpu_blocks


@pytest.mark.parametrize("mask_delimiters", [False, True], ids=["delimiters-kept", "delimiters-masked"])
def test_a_batch_of_forced_block_structures_matches_the_reference(untrained, mask_delimiters):
    from support.vllm_forcing import ForcedTokens

    path, _, tokenizer = untrained
    problems, scripts = forced_batch(DelimiterIds.from_tokenizer(tokenizer), 5)
    llm = evicting_engine(str(path), dtype="float32", block_size=32, logits_processors=[ForcedTokens])
    outputs = run_forced(llm, problems, scripts, mask_delimiters=mask_delimiters, max_new_tokens=260)
    check_against_reference(
        untrained, problems, scripts, outputs, mask_delimiters=mask_delimiters, block_size=32, max_new_tokens=260
    )
    free, total = free_blocks(llm)
    assert free == total - 1  # every page is back in the pool (one is vLLM's null block)
    del llm
    gc.collect()


def test_preempted_requests_recompute_and_evict_exactly_as_before(untrained):
    from support.vllm_forcing import ForcedTokens

    path, _, tokenizer = untrained
    problems, scripts = forced_batch(DelimiterIds.from_tokenizer(tokenizer), 6)
    # 18 pages of 32 tokens for six requests that hold up to ~7 pages each: the pool runs out.
    llm = evicting_engine(
        str(path),
        dtype="float32",
        block_size=32,
        num_gpu_blocks_override=18,
        max_model_len=512,
        logits_processors=[ForcedTokens],
    )
    outputs = run_forced(llm, problems, scripts, mask_delimiters=False, max_new_tokens=260)
    assert sum(o.kv_transfer_params[REPORT_KEY]["preemptions"] for o in outputs) > 0
    check_against_reference(
        untrained, problems, scripts, outputs, mask_delimiters=False, block_size=32, max_new_tokens=260
    )
    free, total = free_blocks(llm)
    assert free == total - 1
    del llm
    gc.collect()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_moving_kv_slots_equals_writing_them_there(untrained, dtype):
    """The probed page layout moves keys and values exactly, whatever tiling the backend uses for a dtype."""
    from openmementos.infer.vllm_plugin.worker import PageLayout

    path, _, _ = untrained
    llm = evicting_engine(str(path), dtype=dtype, block_size=32, num_gpu_blocks_override=16, max_model_len=256)
    runner = llm.llm_engine.engine_core.engine_core.model_executor.driver_worker.worker.model_runner
    layer = runner.compilation_config.static_forward_context[runner.kv_cache_config.kv_cache_groups[0].layer_names[0]]
    cache = layer.kv_cache
    impl = layer.impl
    generator = torch.Generator().manual_seed(0)
    src, dst = [5 * 32 + 3, 5 * 32 + 31, 6 * 32 + 0, 6 * 32 + 17], [4 * 32 + 1, 4 * 32 + 2, 5 * 32 + 3, 5 * 32 + 9]
    key, value = (
        torch.randn(len(src), impl.num_kv_heads, impl.head_size, generator=generator).to(cache.dtype) for _ in range(2)
    )
    cache.zero_()
    impl.do_kv_cache_update(layer, key, value, cache, torch.tensor(src))
    expected = cache.clone()
    impl.do_kv_cache_update(layer, key, value, expected, torch.tensor(dst))
    PageLayout(runner).move(cache, src, dst)  # slot 5*32+3 is both a source and a destination
    assert cache[4].abs().sum() > 0 and torch.equal(cache, expected)
    del llm
    gc.collect()


def test_requests_an_engine_cannot_serve_are_refused_with_the_reason(untrained, tmp_path):
    from support.tiny_model import build_tiny_model
    from vllm import SamplingParams

    path, _, _ = untrained
    evicting = SamplingParams(max_tokens=4, extra_args={"memento_evict": True})
    llm = evicting_engine(str(path), dtype="float32", kv_cache_dtype="fp8", max_model_len=256)
    with pytest.raises(ValueError, match="quantised KV cache"):
        llm.generate(["Find x."], evicting, use_tqdm=False)
    assert llm.generate(["Find x."], SamplingParams(max_tokens=4), use_tqdm=False)[0].outputs[0].token_ids
    del llm
    gc.collect()
    llm = evicting_engine(str(build_tiny_model(tmp_path / "base")), dtype="float32", max_model_len=256)
    with pytest.raises(ValueError, match=r"not a memento model.*sft --stage 1"):
        llm.generate(["Find x."], evicting, use_tqdm=False)
    del llm
    gc.collect()


def test_the_plugin_patches_nothing_on_another_vllm_release():
    script = (
        "import logging, vllm; vllm.__version__ = '0.33.0'\n"
        "from openmementos.infer.vllm_plugin import register; register()\n"
        "from vllm.v1.core.sched.scheduler import Scheduler\n"
        "print('patched' if hasattr(Scheduler.schedule, '__openmementos_original__') else 'untouched')\n"
    )
    env = {**os.environ, "VLLM_PLUGINS": ""}  # vLLM's own plugin loading must not patch first
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.strip().endswith("untouched"), done.stderr[-2000:]
    assert "supports vLLM >=0.32,<0.33" in done.stderr and "found 0.33.0" in done.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(memorised, tmp_path):
    """`openmementos serve` on the memorised model, on a free loopback port; stopped after the test."""
    model, row = memorised
    port = _free_port()
    log = (tmp_path / "server.log").open("w")
    command = [str(Path(sys.executable).parent / "openmementos"), "serve", "--model", str(model), "--port", str(port)]
    command += ["--", "--dtype", "float32", "--max-model-len", "1024", "--num-gpu-blocks-override", "64"]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert server.poll() is None, (tmp_path / "server.log").read_text()[-4000:]
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        server.kill()
        pytest.fail("the server did not start: " + (tmp_path / "server.log").read_text()[-4000:])
    yield f"http://127.0.0.1:{port}/v1", str(model), row
    server.terminate()
    try:
        server.wait(timeout=60)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def test_serve_evicts_blocks_for_an_openai_client(served, memorised, tmp_path):
    import openai
    from transformers import AutoTokenizer

    base_url, model, row = served
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
    chat = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": row["problem"]}],
        max_tokens=300,
        temperature=0,
        extra_body={"skip_special_tokens": False},
    )
    report = chat.model_extra["kv_transfer_params"][REPORT_KEY]
    hf = generate(model, row, "hf", tmp_path / "hf.jsonl")
    assert chat.choices[0].message.content == hf["text"]  # the training ChatML template, the same tokens
    assert report["blocks_evicted"] == hf["blocks_evicted"] == 3
    assert report["peak_kv_tokens"] == hf["peak_kv_tokens"]

    # A client can opt out per request; a malformed opt-in is refused with HTTP 400.
    plain = client.completions.create(
        model=model,
        prompt=encode_prompt(AutoTokenizer.from_pretrained(model), row["problem"]),  # the training prompt, as ids
        max_tokens=300,
        temperature=0,
        extra_body={"skip_special_tokens": False, "vllm_xargs": {"memento_evict": 0}},
    )
    assert not (plain.model_extra.get("kv_transfer_params") or {}).get(REPORT_KEY)
    with pytest.raises(openai.BadRequestError, match="memento_evict"):
        client.completions.create(
            model=model, prompt="x", max_tokens=2, extra_body={"vllm_xargs": {"memento_evict": "maybe"}}
        )
