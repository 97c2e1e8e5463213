"""Peak KV-cache tokens with and without block eviction: the HF backend measured, next to the simulations.

Every `default` row of a published dataset (the demo output by default) is fed to the evicting HF
decoder as a forced continuation: the ChatML prompt, then the memento response and `<|im_end|>`, in
chunks that end at each `<|summary_end|>` (where the cache peaks; token-by-token feeding with
`--per-token` gives the same numbers). The same rows are fed once more without eviction (the baseline).

Printed next to the measured figures:
* `kvsim`: `openmementos.kvsim.simulate_kv` on the exact token lengths of the same pieces; it must equal
  the measurement trace by trace (the script exits with status 1 otherwise);
* `stats`: what `openmementos stats --tokenizer MODEL` simulates for the traces (same tokenizer, but it
  frames the prompt as `problem + <think>` instead of the chat template, so it may differ by a few
  tokens per trace);
* the paper's ~2.5x (full-size traces: ~9 blocks of ~1,150 tokens, mementos of ~194 tokens).

The model is a random-init tiny Llama (KV accounting does not depend on the weights) unless `--model`
names a prepared checkpoint. Usage: python benchmarks/bench_kv_eviction.py [--data DIR] [--limit N]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import support_path  # noqa: F401  (tests/ on the path, for `support`)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / "out" / "demo" / "published"
PAPER_RATIO = 2.5


def load_rows(data: Path | None, limit: int) -> tuple[list[dict], str]:
    """`default` rows of the published folder; synthetic memento rows when there is none."""
    folder = data or DEFAULT_DATA
    if folder.exists():
        import datasets

        rows = datasets.load_dataset(str(folder), "default", split="train")
        count = len(rows) if limit <= 0 else min(limit, len(rows))
        return [rows[i] for i in range(count)], f"{folder} ({count} of {len(rows)} rows)"
    if data is not None:
        sys.exit(f"no published dataset at {data}")
    from support.tiny_model import memento_rows

    note = f"synthetic rows (no demo dataset at {folder}; run `make demo` first for real traces)"
    return memento_rows(24 if limit <= 0 else min(limit, 24), blocks_per_row=6), note


def chunks_ending_at(ids: list[int], token: int, start: int) -> list[list[int]]:
    """Split `ids` after every `token` at or past `start` (the prompt stays one chunk)."""
    ends = [i + 1 for i in range(start, len(ids)) if ids[i] == token]
    cuts = sorted({0, start, *ends, len(ids)})
    return [ids[a:b] for a, b in itertools.pairwise(cuts)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, help=f"published dataset folder (default {DEFAULT_DATA})")
    parser.add_argument("--model", type=Path, help="prepared model folder (default: random-init tiny Llama)")
    parser.add_argument("--limit", type=int, default=12, help="rows to feed at most (0: all; ~5 s per demo row)")
    parser.add_argument("--per-token", action="store_true", help="feed the response one token at a time")
    args = parser.parse_args()

    from support.tiny_model import build_tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from openmementos.format import parse_response
    from openmementos.infer.hf import EvictingDecoder
    from openmementos.kvsim import simulate_kv
    from openmementos.stats import figures_from_texts
    from openmementos.train.attention import DelimiterIds
    from openmementos.train.data import encode_conversations, encode_prompt
    from openmementos.train.special_tokens import prepare_model_and_tokenizer

    rows, source = load_rows(args.data, args.limit)
    with tempfile.TemporaryDirectory() as scratch:
        model_dir = args.model or build_tiny_model(Path(scratch) / "tiny")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="sdpa").eval()
        if prepare_model_and_tokenizer(model, tokenizer):
            tokenizer.save_pretrained(Path(scratch) / "prepared")  # stats counts with this tokenizer.json
            counting_tokenizer = str(Path(scratch) / "prepared")
        else:
            counting_tokenizer = str(model_dir)
        delimiters = DelimiterIds.from_tokenizer(tokenizer)

        def n_tokens(text: str) -> int:
            return len(tokenizer.encode(text, add_special_tokens=False))

        measured, baseline, exact, simulated, seconds = [], [], [], [], {True: 0.0, False: 0.0}
        total_tokens = 0
        for row in rows:
            parsed = parse_response(row["response"])
            ids = encode_conversations(tokenizer, [row["problem"]], [row["response"]])["input_ids"][0]
            start = len(encode_prompt(tokenizer, row["problem"]))
            total_tokens += len(ids)
            feeds = [[t] for t in ids[start:]] if args.per_token else None
            for evict in (True, False):
                decoder = EvictingDecoder(model, delimiters, evict=evict, response_start=start)
                began = time.perf_counter()
                if feeds is not None:
                    decoder.feed(ids[:start], last_logits_only=True)
                for chunk in feeds or chunks_ending_at(ids, delimiters.summary_end, start):
                    decoder.feed(chunk, last_logits_only=True)
                seconds[evict] += time.perf_counter() - began
                (measured if evict else baseline).append((decoder.peak_kv_tokens, decoder.blocks_evicted))
            exact.append(
                simulate_kv(
                    start + n_tokens("<think>\n"),
                    [n_tokens(b) for b in parsed.blocks],
                    [n_tokens(m) for m in parsed.mementos],
                    n_tokens("\n</think>\n" + parsed.answer + "<|im_end|>"),
                )
            )
            simulated.append(
                figures_from_texts(
                    domain=row.get("domain", ""),
                    source=row.get("source", ""),
                    problem=row["problem"],
                    blocks=parsed.blocks,
                    mementos=parsed.mementos,
                    answer=parsed.answer,
                    tokenizer=counting_tokenizer,
                ).kv()
            )

    hf_ratios = [b[0] / m[0] for m, b in zip(measured, baseline, strict=True)]
    mismatches = [
        i
        for i, (m, b, e) in enumerate(zip(measured, baseline, exact, strict=True))
        if (m[0], b[0], m[1]) != (e.peak_with_eviction, e.peak_without_eviction, e.blocks_evicted)
    ]
    stats_ratios = [s.ratio for s in simulated]
    gap = max(abs(h - s) / h for h, s in zip(hf_ratios, stats_ratios, strict=True))

    print(f"data: {source}")
    print(f"traces: {len(rows)}, tokens fed: {total_tokens:,} ({'per token' if args.per_token else 'per memento'})")
    print(f"{'peak KV tokens (mean per trace)':<36}{'with eviction':>15}{'without':>12}{'ratio':>9}")
    mean = statistics.fmean
    print(
        f"{'HF backend, measured':<36}{mean(m[0] for m in measured):>15,.1f}{mean(b[0] for b in baseline):>12,.1f}"
        f"{mean(hf_ratios):>8.2f}x"
    )
    print(
        f"{'kvsim, exact piece lengths':<36}{mean(e.peak_with_eviction for e in exact):>15,.1f}"
        f"{mean(e.peak_without_eviction for e in exact):>12,.1f}{mean(e.ratio for e in exact):>8.2f}x"
    )
    print(
        f"{'openmementos stats (simulated)':<36}{mean(s.peak_with_eviction for s in simulated):>15,.1f}"
        f"{mean(s.peak_without_eviction for s in simulated):>12,.1f}{mean(stats_ratios):>8.2f}x"
    )
    print(f"{'paper (MEMENTO)':<36}{'':>15}{'':>12}{PAPER_RATIO:>8.2f}x")
    evicted = sum(m[1] for m in measured)
    print(f"median ratio, HF measured: {statistics.median(hf_ratios):.2f}x; blocks evicted: {evicted}")
    print(f"HF measured == kvsim: {len(rows) - len(mismatches)}/{len(rows)} traces; stats ratio within {gap:.2%}")
    print(f"decode time: {seconds[True]:.2f}s with eviction, {seconds[False]:.2f}s without (baseline)")
    if mismatches:
        sys.exit(f"kvsim disagrees with the HF backend on traces {mismatches[:10]}")


if __name__ == "__main__":
    main()
