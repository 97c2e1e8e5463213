"""Benchmark `openmementos stats` on generated annotated traces: seconds and peak RSS of the command.

For each size (default 10K traces, 4 shards, every third trace judged) it runs `openmementos stats DIR
--json` in a fresh process `--runs` times and prints the best wall time and the largest peak RSS
(ru_maxrss of that process, from wait4), with the frame export (`--parquet`) as a second row.

`--baseline-src DIR` runs the same commands with another source tree of openmementos first on the import
path (e.g. the revision before polars: `git archive 826a688 openmementos | tar -x -C /tmp/before`),
prints the ratio and checks that both print the same JSON.

Run: .venv/bin/python benchmarks/bench_stats.py [--sizes 10000 40000] [--runs 3] [--baseline-src DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import support_path  # noqa: F401  (tests/ on the path, for `support`)

SHARDS = 4
COMMAND = """
import atexit, pathlib, sys
def peak():
    lines = pathlib.Path("/proc/self/status").read_text().splitlines()
    print(next(line for line in lines if line.startswith("VmHWM")), file=sys.stderr)
atexit.register(peak)
from openmementos.cli import app
app()
"""
"""`openmementos ARGS` that reports its own peak RSS on exit (VmHWM, in KiB: ru_maxrss would count the
benchmark's own memory, inherited through fork). Run with `python -P`, so that the current directory
does not shadow the source tree on PYTHONPATH."""


def write_traces(folder: Path, count: int) -> None:
    from support.annotated_traces import make_trace, write_stage

    write_stage(folder, [make_trace(n, n_blocks=2 + n % 9, judged=n % 3 == 0) for n in range(count)], SHARDS)


def run_once(args: list[str], source: Path | None) -> tuple[float, float, str]:
    """(seconds, peak RSS MiB, stdout) of `openmementos ARGS` in a fresh process."""
    env = {**os.environ, "PYTHONPATH": str(source)} if source else dict(os.environ)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-P", "-c", COMMAND, *args], env=env, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"openmementos {' '.join(args)} failed:\n{done.stderr}")
    peak_kib = int(done.stderr.strip().splitlines()[-1].split()[1])
    return seconds, peak_kib / 1024, done.stdout


def measure(args: list[str], source: Path | None, runs: int) -> tuple[float, float, str]:
    results = [run_once(args, source) for _ in range(runs)]
    return min(r[0] for r in results), max(r[1] for r in results), results[-1][2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline-src", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        print(f"{'code':<10}{'traces':>9}{'command':>20}{'seconds':>10}{'traces/s':>10}{'peak RSS MiB':>14}")
        for size in args.sizes:
            folder = work / f"annotate-{size}"
            write_traces(folder, size)
            commands = {"--json": ["stats", str(folder), "--json"]}
            commands["--json --parquet"] = [*commands["--json"], "--parquet", str(work / "frame.parquet")]
            for label, command in commands.items():
                runs = [("current", None)] + ([("baseline", args.baseline_src)] if args.baseline_src else [])
                if label != "--json":
                    runs = runs[:1]  # the baseline has no export
                printed = {}
                for code, source in runs:
                    seconds, peak, out = measure(command, source, args.runs)
                    printed[code] = (seconds, out)
                    print(f"{code:<10}{size:>9,}{label:>20}{seconds:>10.2f}{size / seconds:>10,.0f}{peak:>14.0f}")
                if "baseline" in printed:
                    same = printed["baseline"][1] == printed["current"][1]
                    speedup = printed["baseline"][0] / printed["current"][0]
                    print(f"  current vs baseline: {speedup:.2f}x faster; same JSON: {same}")


if __name__ == "__main__":
    main()
