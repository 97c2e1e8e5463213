"""Benchmark `openmementos download` on generated OpenThoughts3-shaped parquet: rows/s and peak RSS.

For 20K and 100K rows (10K-row shards, one bad row in ten) it runs, each in a fresh process:
- baseline: pyarrow reads every row of the same files into Python dicts (the floor for any converter);
- filter: every row converted to a SourceTrace and filtered (no selection);
- select+filter: a stratified selection of half the rows (--limit, --ratio), then the filters.
Peak RSS (the process's VmHWM) must stay flat from 20K to 100K rows: rows stream a batch at a time.

Then the selection's pre-pass (`make_plan`: stratum counts, then the hash bounds) on 100K and 1M
generated metadata rows (domain, source, difficulty; 10K-row files), today's way (polars groups each
file's rows by stratum) against the way before it (every row through Python, kept here as the
baseline), for two requests: `--domains` (counts only: no row needs a hash) and `--limit 10000 --ratio`
(every row of a partly drawn stratum is hashed: the seeded hash, which both ways share, is then the
floor, so its cost alone is printed too). Both ways must give the same plan.

Run: .venv/bin/python benchmarks/bench_download.py [--sizes 20000 100000] [--prepass-sizes 100000 1000000]
     [--repeat 3] [--workdir DIR]        (`--sizes` with no value: the pre-pass only)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import support_path  # noqa: F401  (tests/ on the path, for `support`)
from support.rowwise_prepass import row_by_row_plan

SHARD_ROWS = 10_000
RATIOS = (("math", Fraction("0.5")), ("code", Fraction("0.3")), ("science", Fraction("0.2")))
PREPASS_REQUESTS = ("domains", "limit+ratio")


def child(mode: str, data: Path, out: Path, rows: int) -> dict[str, Any]:
    """One measurement, in this (fresh) process (imports done before the clock starts)."""
    import rich.progress  # noqa: F401  (the pre-pass shows progress bars)

    import openmementos.download.stage  # noqa: F401  (and polars, readers, sampling)

    started = time.perf_counter()
    figures: dict[str, Any] = {}
    if mode == "baseline":
        from openmementos.download.readers import InputFile, iter_rows

        seen = 0
        for path in sorted(data.rglob("*.parquet")):
            for _ in iter_rows(InputFile(label=path.name, format="parquet", path=str(path))):
                seen += 1
        assert seen == rows
    elif mode.startswith("prepass"):
        figures["plan"] = prepass(mode, data)
    elif mode == "hash floor":
        from openmementos.download.sampling import row_hashes

        row_hashes(1, (f"data/train-00000-of-00100.parquet#{index}" for index in range(rows)))
    else:
        from openmementos.download import DownloadRequest, run_download
        from openmementos.download.sampling import SelectionRequest

        selection = SelectionRequest(seed=1, limit=rows // 2, ratios=RATIOS) if mode == "select+filter" else None
        manifest = run_download(DownloadRequest(out_dir=out, input=data, selection=selection, workers=1)).manifest
        assert manifest.complete
    seconds = time.perf_counter() - started
    return {**figures, "seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_mib": peak_rss_mib()}


def peak_rss_mib() -> float:
    """This process's peak RSS (VmHWM; ru_maxrss would count the parent's memory, inherited through fork)."""
    status = Path("/proc/self/status").read_text().splitlines()
    return int(next(line for line in status if line.startswith("VmHWM")).split()[1]) / 1024


def prepass(mode: str, data: Path) -> str:
    """`prepass <way> <request>`: plan the selection of `data`; returns a digest of the plan."""
    from openmementos.download.mapping import ColumnMapping
    from openmementos.download.readers import local_input
    from openmementos.download.sampling import SelectionRequest
    from openmementos.download.stage import make_plan

    _, way, request_name = mode.split(" ")
    files = local_input(data, "train")
    mapping = ColumnMapping(messages="conversations")
    if request_name == "domains":
        request = SelectionRequest(seed=1, domains=("math", "code"))
    else:
        request = SelectionRequest(seed=1, limit=10_000, ratios=RATIOS)
    plan = make_plan(files, mapping, request) if way == "polars" else row_by_row_plan(files, mapping, request)
    return hashlib.sha256(json.dumps(plan.as_json(), sort_keys=True).encode()).hexdigest()[:16]


def measure(mode: str, data: Path, out: Path, rows: int, repeat: int = 1) -> dict[str, Any]:
    """The fastest of `repeat` runs, each in a fresh process, with the largest peak RSS of them."""
    runs = []
    for _ in range(repeat):
        command = [sys.executable, __file__, "--child", mode, str(data), str(out), str(rows)]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise RuntimeError(f"{mode} on {rows} rows failed:\n{result.stderr}")
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return {**min(runs, key=lambda run: run["seconds"]), "peak_rss_mib": max(run["peak_rss_mib"] for run in runs)}


HEADER = f"{'mode':<32}{'rows':>11}{'seconds':>10}{'rows/s':>12}{'vs baseline':>13}{'peak RSS MiB':>14}"


def row(mode: str, rows: int, figures: dict[str, Any], baseline: dict[str, Any]) -> str:
    ratio = figures["rows_per_s"] / baseline["rows_per_s"]
    return (
        f"{mode:<32}{rows:>11,}{figures['seconds']:>10.2f}{figures['rows_per_s']:>12,.0f}"
        f"{ratio:>12.2f}x{figures['peak_rss_mib']:>14.0f}"
    )


def download_section(sizes: list[int], work: Path) -> None:
    from support.ot3_rows import write_ot3_parquet

    results: dict[tuple[str, int], dict[str, Any]] = {}
    for rows in sizes:
        data = work / f"data-{rows}"
        write_ot3_parquet(data, rows, max(1, rows // SHARD_ROWS))
        for mode in ("baseline", "filter", "select+filter"):
            results[mode, rows] = measure(mode, data, work / f"out-{mode}-{rows}", rows)
    print(HEADER)
    for (mode, rows), figures in results.items():
        print(row(mode, rows, figures, results["baseline", rows]))
    small, large = min(sizes), max(sizes)
    for mode in ("filter", "select+filter"):
        growth = results[mode, large]["peak_rss_mib"] / results[mode, small]["peak_rss_mib"]
        print(f"peak RSS {mode}: {large:,} rows / {small:,} rows = {growth:.2f}x (flat is ~1.0x)")


def prepass_section(sizes: list[int], work: Path, repeat: int) -> None:
    from support.ot3_rows import write_metadata_parquet

    results: dict[tuple[str, int], dict[str, Any]] = {}
    for rows in sizes:
        data = work / f"metadata-{rows}"
        write_metadata_parquet(data, rows, max(1, rows // SHARD_ROWS))
        for request in PREPASS_REQUESTS:
            for way in ("row-by-row", "polars"):
                mode = f"prepass {way} {request}"
                results[mode, rows] = measure(mode, data, work, rows, repeat)
        results["hash floor", rows] = measure("hash floor", data, work, rows, repeat)
    print(f"\nselection pre-pass (make_plan) on metadata rows, best of {repeat} runs\n{HEADER}")
    for (mode, rows), figures in results.items():
        baseline_mode = mode.replace("polars", "row-by-row") if mode.startswith("prepass") else mode
        if baseline_mode.startswith("prepass") and baseline_mode != mode:
            same = "same plan" if figures["plan"] == results[baseline_mode, rows]["plan"] else "PLANS DIFFER"
            print(f"{row(mode, rows, figures, results[baseline_mode, rows])}  {same}")
        else:
            print(row(mode, rows, figures, figures))
    small, large = min(sizes), max(sizes)
    for request in PREPASS_REQUESTS:
        for way in ("row-by-row", "polars"):
            mode = f"prepass {way} {request}"
            growth = results[mode, large]["peak_rss_mib"] / results[mode, small]["peak_rss_mib"]
            print(f"peak RSS {mode}: {large:,} rows / {small:,} rows = {growth:.2f}x (flat is ~1.0x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[20_000, 100_000])
    parser.add_argument("--prepass-sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=3, help="runs per pre-pass measurement (the fastest counts)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "DATA", "OUT", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, data, out, rows = args.child
        print(json.dumps(child(mode, Path(data), Path(out), int(rows))))
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        if args.sizes:
            download_section(args.sizes, Path(tmp))
        if args.prepass_sizes:
            prepass_section(args.prepass_sizes, Path(tmp), args.repeat)


if __name__ == "__main__":
    main()
