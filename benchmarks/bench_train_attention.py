"""Peak memory and step time of one stage-2 row: the dense reference mask vs block-structured attention.

One training step (collate, forward, backward) on one memento row of 4K, 8K and 16K tokens, shaped
like the published data (blocks of ~1,150 tokens, mementos of ~194; SPEC 4), on the random-init tiny
Llama. Three attention paths run on the same row, each in a fresh process:

* `dense`: SDPA with the `seq x seq` boolean memento mask (the reference, `--attn-implementation sdpa`);
* `blocks`: `memento_blocks`, one SDPA call per segment over its gathered visible keys;
* `no-op`: an attention that returns the values unchanged, the baseline for everything that is not
  attention (embeddings, MLPs, logits and their gradients).

*Attention memory* is a path's peak minus the no-op's peak; the goal at 16K is blocks <= 1/10 of
dense, and not slower. On CPU the peak is the resident-set high-water mark sampled during the step
(above the resident set right before it); on a CUDA GPU it is `torch.cuda.max_memory_allocated`, and
`flex` (`memento_flex`) runs too.

Usage: python benchmarks/bench_train_attention.py [--lengths 4096 8192 16384] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import support_path  # noqa: F401  (tests/ on the path, for `support`)

BLOCK_TOKENS = 1150
MEMENTO_TOKENS = 194
PROMPT_TOKENS = 120
GOAL_MEMORY_RATIO = 0.1
PATHS = {"no-op": "memento_noop", "dense": "sdpa", "blocks": "memento_blocks", "flex": "memento_flex"}


def memento_row(tokenizer, length: int) -> dict:
    """Token ids of a prompt, then `<think>` and block / memento pairs up to `length` tokens, then an answer."""
    from openmementos.train.attention import DelimiterIds

    d = DelimiterIds.from_tokenizer(tokenizer)
    words = [i for i in range(len(tokenizer)) if i not in (d.block_start, d.block_end, d.summary_start, d.summary_end)]
    words = [i for i in words if i not in tokenizer.all_special_ids]

    def text(n: int, offset: int) -> list[int]:
        return [words[(offset + 7 * i) % len(words)] for i in range(n)]

    prompt = text(PROMPT_TOKENS, 0)
    response: list[int] = []
    while len(prompt) + len(response) + BLOCK_TOKENS + MEMENTO_TOKENS + 40 < length:
        block = [d.block_start, *text(BLOCK_TOKENS, len(response)), d.block_end]
        memento = [d.summary_start, *text(MEMENTO_TOKENS, len(response) + 1), d.summary_end]
        response += block + memento
    response += text(length - len(prompt) - len(response), 3)
    return {"input_ids": prompt + response, "labels": [-100] * len(prompt) + response}


class PeakResident:
    """Samples the process's resident set size while running, to find its high-water mark."""

    def __init__(self, interval: float = 0.001) -> None:
        import os

        self.page = os.sysconf("SC_PAGE_SIZE")
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def current(self) -> int:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * self.page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(self.interval)

    def __enter__(self) -> PeakResident:
        self.baseline = self.current()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.current())


def child(model_dir: str, path: str, length: int, repeats: int) -> None:
    """Measure one path at one length; prints one JSON line."""
    import torch
    from transformers import AttentionInterface, AutoModelForCausalLM, AutoTokenizer
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    from openmementos.train.attention import DelimiterIds
    from openmementos.train.block_attention import register_memento_attention
    from openmementos.train.data import MementoCollator

    def noop_attention(module, query, key, value, attention_mask, **kwargs):
        groups = query.shape[1] // value.shape[1]
        return value.repeat_interleave(groups, dim=1).transpose(1, 2).contiguous(), None

    register_memento_attention()
    AttentionInterface.register("memento_noop", noop_attention)
    AttentionMaskInterface.register("memento_noop", sdpa_mask)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=PATHS[path]).to(device).train()
    feature = memento_row(tokenizer, length)
    collator = MementoCollator(
        pad_token_id=tokenizer.pad_token_id,
        stage=2,
        delimiters=DelimiterIds.from_tokenizer(tokenizer),
        attn_implementation="memento_blocks" if path == "no-op" else PATHS[path],
    )

    def step() -> float:
        began = time.perf_counter()
        batch = {k: v.to(device) for k, v in collator([feature]).items()}
        model(**batch).loss.backward()
        if cuda:
            torch.cuda.synchronize()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - began

    if cuda:
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        first = step()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        with PeakResident() as resident:
            first = step()
        peak = resident.peak - resident.baseline
    times = [step() for _ in range(repeats)] if repeats else [first]
    print(json.dumps({"peak_bytes": peak, "seconds": statistics.median(times)}))


def measure(model_dir: Path, path: str, length: int, repeats: int) -> dict:
    script = [sys.executable, __file__, "--child", str(model_dir), path, str(length), "--repeats", str(repeats)]
    done = subprocess.run(script, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{path} at {length} tokens failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384])
    parser.add_argument("--repeats", type=int, default=2, help="timed steps after the measured first one")
    parser.add_argument("--child", nargs=3, metavar=("MODEL", "PATH", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args.repeats)
        return

    import torch
    from support.tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openmementos.train.special_tokens import prepare_model_and_tokenizer

    paths = ["no-op", "dense", "blocks"] + (["flex"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = build_tiny_model(Path(scratch) / "tiny")
        model, tokenizer = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
        prepare_model_and_tokenizer(model, tokenizer)
        model.save_pretrained(model_dir)
        tokenizer.save_pretrained(model_dir)
        device = "CUDA (max_memory_allocated)" if torch.cuda.is_available() else "CPU (resident-set high-water mark)"
        print(f"one stage-2 training step (collate + forward + backward), tiny Llama, {device}")
        print(f"row: {PROMPT_TOKENS}-token prompt, blocks of {BLOCK_TOKENS} tokens, mementos of {MEMENTO_TOKENS}")
        header = f"{'tokens':>7} {'path':>7} {'step MiB':>9} {'attention MiB':>14} {'step s':>8}"
        print(header + f" {'attn mem vs dense':>18} {'time vs dense':>14}")
        verdicts = []
        for length in args.lengths:
            figures = {path: measure(model_dir, path, length, args.repeats) for path in paths}
            base = figures["no-op"]["peak_bytes"]
            attention = {path: max(f["peak_bytes"] - base, 0) for path, f in figures.items()}
            for path in paths:
                f = figures[path]
                ratios = ""
                if path not in ("no-op", "dense"):
                    memory_ratio = attention[path] / attention["dense"] if attention["dense"] else float("nan")
                    time_ratio = f["seconds"] / figures["dense"]["seconds"]
                    ratios = f" {memory_ratio:>17.3f}x {time_ratio:>13.2f}x"
                    if path == "blocks":
                        verdicts.append((length, memory_ratio, time_ratio))
                print(
                    f"{length:>7} {path:>7} {f['peak_bytes'] / 2**20:>9.1f} {attention[path] / 2**20:>14.1f}"
                    f" {f['seconds']:>8.3f}{ratios}"
                )
        length, memory_ratio, time_ratio = verdicts[-1]
        met = memory_ratio <= GOAL_MEMORY_RATIO and time_ratio <= 1.0
        print(
            f"at {length} tokens, blocks use {memory_ratio:.3f}x the dense attention memory and "
            f"{time_ratio:.2f}x its step time (goal: <= {GOAL_MEMORY_RATIO}x, not slower): "
            f"{'met' if met else 'NOT met'}"
        )


if __name__ == "__main__":
    main()
