"""Benchmark `openmementos segment`: granularity next to the published figures, ms per trace by phase,
traces/s and peak RSS, against plain tokenization.

Inputs:
- the real OpenThoughts3 trace in ../shared/fixtures/ot3_example_trace.jsonl (skipped when absent);
- a corpus of OpenThoughts-length traces (~40K characters): each joins the reasoning of 4 traces of the
  embedded sample, picked and ordered by a seeded generator, so no two are alike;
- the embedded sample itself (short traces).

Printed, all measured in this run on this machine, with default options (published objective, no cap):
- sentences per trace (published splitter on the example trace: 231) and the LLM scorer's windows per
  trace (16 boundaries each, plus windows of 11 with --second-window 11);
- blocks per trace (median by domain) and mean tokens per block, next to the published figures
  (median ~9 math, ~9 code, ~7 science; mean ~1,150 tokens);
- ms per trace for splitting, scoring (heuristic), token counting and partitioning, and the whole
  `segment_trace`; the baseline is tiktoken encoding the same reasoning once (`encode_ordinary`), and
  the ratio whole / baseline (target <= 5x);
- traces/s of the `segment` command (a fresh process each) with --workers 1 and 2 on a 4-shard corpus;
- peak RSS of that process for one shard and for four shards of the same size (it must stay flat: rows
  stream; memory is bounded by the shard writer's row group, 1,000 rows, not by the number of traces).

Run: .venv/bin/python benchmarks/bench_segment.py [--traces 1000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from openmementos.resources import sample_traces
from openmementos.runtime.stage import ShardTask, Stage
from openmementos.schema import SourceTrace
from openmementos.segment.llm_scorer import windows
from openmementos.segment.partition import optimal_partition
from openmementos.segment.request import SegmentSettings
from openmementos.segment.scorers import HeuristicScorer
from openmementos.segment.stage import segment_trace
from openmementos.segment.statistics import BlockStatistics
from openmementos.sentences import split_sentences
from openmementos.tokens import count_tokens, get_encoding

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ot3_example_trace.jsonl"
TARGET_CHARS = 40_000
CAP = 1536
PUBLISHED_SENTENCES = 231  # the published splitter on the example trace
PUBLISHED = "published: median ~9 blocks (math, code), ~7 (science); mean ~1,150 tokens per block"


def corpus(count: int, seed: int = 0) -> list[SourceTrace]:
    """OpenThoughts-length traces: reasonings of sample traces joined until ~40K characters."""
    sample = sample_traces()
    rng = random.Random(seed)
    traces = []
    for number in range(count):
        parts: list[str] = []
        while sum(map(len, parts)) < TARGET_CHARS:
            parts.append(rng.choice(sample).reasoning.strip())
        first = sample[number % len(sample)]
        traces.append(first.model_copy(update={"id": f"bench-{number:06d}", "reasoning": "\n\n".join(parts)}))
    return traces


def fixture_trace() -> SourceTrace | None:
    if not FIXTURE.exists():
        return None
    row = json.loads(FIXTURE.read_text().splitlines()[0])
    return SourceTrace.from_assistant_text(
        row["cot"] + "\nanswer", id=row["task_id"], problem=row["problem"], domain=row["domain"], source=row["source"]
    )


# --------------------------------------------------------------------------- phases, in process


def best_ms(works: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """The fastest of `repeats` runs of each work, in ms. The works take turns in every round, so a change
    of load on the (shared) machine hits them all alike; the minimum is the least disturbed run."""
    best = dict.fromkeys(works, float("inf"))
    for _ in range(repeats):
        for name, work in works.items():
            started = time.perf_counter()
            work()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: seconds * 1000 for name, seconds in best.items()}


def phases(trace: SourceTrace, repeats: int) -> dict[str, float]:
    text = trace.reasoning
    encoding = get_encoding("cl100k_base")
    scorer = HeuristicScorer()
    settings = SegmentSettings()
    spans = split_sentences(text)
    sentences = [text[a:b] for a, b in spans]
    scores = scorer.score(sentences).scores
    sizes = count_tokens(sentences)
    segmented = segment_trace(trace, scorer, settings)
    times = best_ms(
        {
            "split": lambda: split_sentences(text),
            "score": lambda: scorer.score(sentences),
            "count": lambda: count_tokens(sentences),
            "partition": lambda: optimal_partition(sizes, scores),
            "partition_capped": lambda: optimal_partition(sizes, scores, max_tokens=CAP),
            "whole": lambda: segment_trace(trace, scorer, settings),
            "encode": lambda: encoding.encode_ordinary(text),
        },
        repeats,
    )
    return {
        **times,
        "sentences": len(spans),
        "tokens": sum(sizes),
        "windows": len(windows(len(spans) - 1, 16)),
        "windows_second": len(windows(len(spans) - 1, 11)),
        "blocks": len(segmented.blocks),
        "block_tokens": statistics.fmean(segmented.block_tokens),
    }


def print_phases(title: str, rows: list[dict[str, float]]) -> None:
    mean = {key: statistics.fmean(row[key] for row in rows) for key in rows[0]}
    print(f"\n{title}: {len(rows)} trace(s), {mean['tokens']:,.0f} tokens on average")
    print(
        f"  sentences per trace: {mean['sentences']:.0f}; LLM scorer windows per trace: {mean['windows']:.1f} "
        f"(+{mean['windows_second']:.1f} with --second-window 11)"
    )
    print("  ms per trace: " + ", ".join(f"{k} {mean[k]:.2f}" for k in ("split", "score", "count", "partition")))
    print(f"  (partition with --max-block-tokens {CAP}: {mean['partition_capped']:.2f} ms)")
    print(
        f"  whole segment {mean['whole']:.2f} ms vs tiktoken encode of the same text {mean['encode']:.2f} ms: "
        f"ratio {mean['whole'] / mean['encode']:.2f}x (target <= 5x)"
    )


# --------------------------------------------------------------------------- the command, in a fresh process


def write_input(traces: list[SourceTrace], directory: Path, shards: int = 4) -> Path:
    chunks = [traces[i::shards] for i in range(shards)]
    tasks = [ShardTask(i, f"part-{i:05d}", chunk) for i, chunk in enumerate(chunks)]
    Stage("download", directory, SourceTrace, _emit, description="writing input").run(tasks)
    return directory


def _emit(task: ShardTask) -> object:
    yield from task.source


_CHILD = """
import resource, sys, time
from typer.testing import CliRunner
from openmementos.cli import app
args = sys.argv[1:]
started = time.perf_counter()
result = CliRunner().invoke(app, ["segment", *args])
elapsed = time.perf_counter() - started
assert result.exit_code == 0, result.output
own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(elapsed, max(own, workers))
"""


def run_command(in_dir: Path, out_dir: Path, *options: str) -> tuple[float, float]:
    """Seconds and peak RSS (MiB, the largest process) of one `segment` run in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(in_dir), str(out_dir), *options], capture_output=True, text=True, check=True
    )
    seconds, rss_kib = done.stdout.split()[-2:]
    return float(seconds), float(rss_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=int, default=1000, help="corpus size for traces/s (>= 1000)")
    parser.add_argument("--phase-traces", type=int, default=100, help="corpus traces timed phase by phase")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-segment-"))
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{os.cpu_count()} CPUs, load average {load} (other work on the machine slows every figure)")

    if (trace := fixture_trace()) is not None:
        row = phases(trace, repeats=30)
        print_phases(f"fixture {trace.id}", [row])
        print(
            f"  sentences: {row['sentences']:.0f} (published splitter: {PUBLISHED_SENTENCES}, "
            f"{row['sentences'] / PUBLISHED_SENTENCES - 1:+.0%}); blocks: {row['blocks']:.0f} of "
            f"{row['block_tokens']:,.0f} tokens on average ({PUBLISHED})"
        )
    else:
        print(f"(fixture {FIXTURE} absent: skipped)")

    print_phases("embedded sample (short traces)", [phases(t, repeats=3) for t in sample_traces()])

    traces = corpus(args.traces)
    print_phases(
        f"corpus (~{TARGET_CHARS:,} characters each)", [phases(t, repeats=3) for t in traces[: args.phase_traces]]
    )

    big = write_input(traces, workdir / "in-big")
    # Same shard size as the big input (a quarter of it in one shard): peak RSS must not grow with the count.
    small = write_input(traces[: len(traces) // 4], workdir / "in-small", shards=1)
    print(f"\n`openmementos segment` on {len(traces):,} traces in 4 shards (fresh process per run):")
    base_seconds = None
    rss_big = 0.0
    for workers in (1, 2):
        seconds, rss = run_command(big, workdir / f"out-w{workers}", "--workers", str(workers))
        base_seconds = base_seconds or seconds
        rss_big = rss_big or rss
        print(
            f"  --workers {workers}: {len(traces) / seconds:,.0f} traces/s ({seconds:.1f} s, "
            f"speed-up {base_seconds / seconds:.2f}x), peak RSS {rss:,.0f} MiB"
        )
    _, rss_small = run_command(small, workdir / "out-small")
    print(
        f"  peak RSS, --workers 1: {rss_small:,.0f} MiB for {len(traces) // 4:,} traces, "
        f"{rss_big:,.0f} MiB for {len(traces):,} (x{rss_big / rss_small:.2f} for 4x the traces)"
    )

    print("\nblock statistics with default options (published objective, no block cap):")
    sample_in = write_input(sample_traces(), workdir / "sample-in", shards=2)
    run_command(sample_in, workdir / "sample")
    for label, out in (
        (f"corpus, {len(traces):,} OpenThoughts-length traces", workdir / "out-w1"),
        (f"embedded sample, {len(sample_traces())} short traces", workdir / "sample"),
    ):
        stats = BlockStatistics.of_directory(out)
        assert stats is not None
        print(f"  {label}:\n    {stats.render()}")
    print(f"\n(work files in {workdir})")


if __name__ == "__main__":
    main()
