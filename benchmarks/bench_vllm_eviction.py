"""vLLM with in-engine block eviction vs without, at a fixed small KV budget: throughput, preemptions, KV.

Many concurrent requests generate long block-structured answers (blocks of `--block-tokens` tokens,
mementos of `--memento-tokens`), on a KV pool of `--kv-pages` pages (`num_gpu_blocks_override`) that
is the bottleneck. The same requests run twice in one process, each on a fresh engine: once evicting
(the openmementos plugin), once not (stock vLLM behaviour). Printed, with eviction / without as ratios:
output tokens/s, time to finish all requests, requests finished by the time the evicting run was
done, preemptions, and the peak number of KV pages in use.

The model is the untrained tiny test Llama with the memento delimiters; every token is forced by a
logits processor (`support.vllm_forcing`), so both runs generate exactly the same tokens and the
comparison is about the engine only. Needs the vLLM venv:

    make .venv-vllm/.ready
    VLLM_CPU_KVCACHE_SPACE=1 .venv-vllm/bin/python benchmarks/bench_vllm_eviction.py [--requests 24 ...]

Under `make bench` (the main venv, no vLLM) it says so and exits 0.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import support_path  # noqa: F401  (tests/ on the path, for `support`)

PAPER = "paper (Qwen3-8B-class model, B200): ~1.75x throughput, ~2.5x lower peak KV"


@dataclass
class Run:
    seconds: float
    tokens: int
    finish_times: list[float]
    preemptions: int
    peak_pages: int
    blocks_evicted: int
    mean_running: float
    request_peak_tokens: list[int]
    page_tokens: int = 32

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds

    @property
    def request_peak_pages(self) -> float:
        pages = [-(-t // self.page_tokens) for t in self.request_peak_tokens]
        return sum(pages) / len(pages)

    def finished_by(self, deadline: float) -> int:
        return sum(t <= deadline for t in self.finish_times)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=24, help="concurrent requests (default 24)")
    parser.add_argument("--blocks", type=int, default=6, help="blocks per answer (default 6)")
    parser.add_argument("--block-tokens", type=int, default=80, help="tokens per block (default 80)")
    parser.add_argument("--memento-tokens", type=int, default=12, help="tokens per memento (default 12)")
    parser.add_argument("--kv-pages", type=int, default=80, help="KV pool size in pages (default 80)")
    parser.add_argument("--page-tokens", type=int, default=32, help="tokens per KV page (default 32)")
    return parser.parse_args()


def run(llm, prompts, scripts, *, evict: bool, max_tokens: int) -> Run:
    """Drive the engine step by step: finish times, pages in use after each step, preemptions."""
    from support.forced_tokens import as_extra_args
    from vllm import SamplingParams

    from openmementos.infer.vllm_plugin.core import REPORT_KEY

    engine = llm.llm_engine
    scheduler = engine.engine_core.engine_core.scheduler
    pool = scheduler.kv_cache_manager.block_pool
    preemptions = 0
    preempt = scheduler._preempt_request

    def counting_preempt(request, *args, **kwargs):
        nonlocal preemptions
        preemptions += 1
        return preempt(request, *args, **kwargs)

    scheduler._preempt_request = counting_preempt
    for i, (prompt, script) in enumerate(zip(prompts, scripts, strict=True)):
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=0.0,
            ignore_eos=True,
            extra_args={"memento_evict": evict, **as_extra_args(script)},
        )
        engine.add_request(f"r{i}", {"prompt_token_ids": prompt}, params)
    finish_times, request_peaks, tokens, peak, evicted, steps, running = [], [], 0, 0, 0, 0, 0
    start = time.perf_counter()
    while engine.has_unfinished_requests():
        for output in engine.step():
            if output.finished:
                finish_times.append(time.perf_counter() - start)
                generated = len(output.outputs[0].token_ids)
                tokens += generated
                report = (output.kv_transfer_params or {}).get(REPORT_KEY) or {}
                evicted += report.get("blocks_evicted", 0)
                request_peaks.append(report.get("peak_kv_tokens", len(output.prompt_token_ids) + generated - 1))
        peak = max(peak, pool.num_gpu_blocks - 1 - pool.get_num_free_blocks())
        steps, running = steps + 1, running + len(scheduler.running)
    seconds = time.perf_counter() - start
    scheduler._preempt_request = preempt
    return Run(seconds, tokens, finish_times, preemptions, peak, evicted, running / steps, request_peaks)


def main() -> None:
    if importlib.util.find_spec("vllm") is None:
        print("bench_vllm_eviction: vLLM is not installed in this venv; run it with .venv-vllm/bin/python")
        return
    args = parse_args()
    cache = tempfile.mkdtemp(prefix="openmementos-bench-vllm-")
    os.environ.setdefault("VLLM_CACHE_ROOT", cache)
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")

    from support.forced_tokens import block_script
    from support.tiny_model import memento_tokenizer_model
    from support.vllm_forcing import ForcedTokens
    from transformers import AutoTokenizer

    from openmementos.infer.vllm_backend import evicting_engine
    from openmementos.train.attention import DelimiterIds
    from openmementos.train.data import encode_prompt

    model = memento_tokenizer_model(Path(cache) / "model")
    tokenizer = AutoTokenizer.from_pretrained(model)
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    filler = tokenizer.encode(" step", add_special_tokens=False)[0]
    script = block_script(
        delimiters,
        blocks=args.blocks,
        block_tokens=args.block_tokens,
        memento_tokens=args.memento_tokens,
        answer_tokens=16,
        fill=filler,
    )
    max_tokens = max(script) + 1
    prompts = [encode_prompt(tokenizer, f"Problem {i}: find x with x^2 = {i * i}.") for i in range(args.requests)]
    scripts = [script] * args.requests
    longest = max(map(len, prompts)) + max_tokens
    max_model_len = -(-longest // args.page_tokens) * args.page_tokens
    if max_model_len > args.kv_pages * args.page_tokens:
        sys.exit(f"--kv-pages {args.kv_pages} cannot hold one request without eviction ({longest} tokens)")

    runs = {}
    for evict in (True, False):
        llm = evicting_engine(
            str(model),
            dtype="float32",
            block_size=args.page_tokens,
            num_gpu_blocks_override=args.kv_pages,
            max_model_len=max_model_len,
            logits_processors=[ForcedTokens],
            disable_log_stats=True,
        )
        runs[evict] = run(llm, prompts, scripts, evict=evict, max_tokens=max_tokens)
        runs[evict].page_tokens = args.page_tokens
        del llm
        gc.collect()

    with_, without = runs[True], runs[False]
    print(
        f"{args.requests} requests x {max_tokens} generated tokens ({args.blocks} blocks of {args.block_tokens}, "
        f"mementos of {args.memento_tokens}); KV pool {args.kv_pages} pages x {args.page_tokens} tokens; "
        "tiny Llama, CPU"
    )
    print(f"{'':28}{'evict':>12}{'no evict':>12}{'ratio':>10}")
    rows = [
        ("output tokens/s", with_.tokens_per_second, without.tokens_per_second, "{:.0f}"),
        ("time to finish all (s)", with_.seconds, without.seconds, "{:.2f}"),
        (
            f"finished by {with_.seconds:.1f} s",
            with_.finished_by(with_.seconds),
            without.finished_by(with_.seconds),
            "{}",
        ),
        ("mean running requests/step", with_.mean_running, without.mean_running, "{:.1f}"),
        ("preemptions", with_.preemptions, without.preemptions, "{}"),
        ("peak KV pages, whole pool", with_.peak_pages, without.peak_pages, "{}"),
        ("peak KV pages per request", with_.request_peak_pages, without.request_peak_pages, "{:.1f}"),
        ("blocks evicted", with_.blocks_evicted, without.blocks_evicted, "{}"),
    ]
    for name, a, b, fmt in rows:
        ratio = f"{a / b:.2f}x" if b else "-"
        print(f"{name:28}{fmt.format(a):>12}{fmt.format(b):>12}{ratio:>10}")
    print(f"throughput ratio (evict / no evict): {with_.tokens_per_second / without.tokens_per_second:.2f}x")
    ratio = without.request_peak_pages / with_.request_peak_pages
    print(f"peak KV per request (no evict / evict): {ratio:.2f}x; {PAPER}")
    print(
        "On CPU a decode step of the tiny model is mostly fixed engine overhead and grows little with its "
        "batch, so throughput follows the number of requests the KV pool lets run at once (the pool is full "
        "in both runs); with a real model on a GPU, attention over the shorter KV also gets cheaper."
    )
    if with_.tokens != without.tokens:
        sys.exit("the two runs generated different numbers of tokens")


if __name__ == "__main__":
    main()
