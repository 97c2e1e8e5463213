"""Benchmark `openmementos download` on generated OpenThoughts3-shaped parquet: rows/s and peak RSS.

For 20K and 100K rows (10K-row shards, one bad row in ten) it runs, each in a fresh process:
- baseline: pyarrow reads every row of the same files into Python dicts (the floor for any converter);
- filter: every row converted to a SourceTrace and filtered (no selection);
- select+filter: a stratified selection of half the rows (--limit, --ratio), then the filters.
Peak RSS (ru_maxrss of the process) must stay flat from 20K to 100K rows: rows stream a batch at a time.

Run: .venv/bin/python benchmarks/bench_download.py [--sizes 20000 100000] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import support_path  # noqa: F401  (tests/ on the path, for `support`)

SHARD_ROWS = 10_000


def child(mode: str, data: Path, out: Path, rows: int) -> dict[str, float]:
    """One measurement, in this (fresh) process."""
    started = time.perf_counter()
    if mode == "baseline":
        from openmementos.download.readers import InputFile, iter_rows

        seen = 0
        for path in sorted(data.rglob("*.parquet")):
            for _ in iter_rows(InputFile(label=path.name, format="parquet", path=str(path))):
                seen += 1
        assert seen == rows
    else:
        from openmementos.download import DownloadRequest, run_download
        from openmementos.download.sampling import SelectionRequest

        selection = None
        if mode == "select+filter":
            ratios = (("math", Fraction("0.5")), ("code", Fraction("0.3")), ("science", Fraction("0.2")))
            selection = SelectionRequest(seed=1, limit=rows // 2, ratios=ratios)
        manifest = run_download(DownloadRequest(out_dir=out, input=data, selection=selection, workers=1)).manifest
        assert manifest.complete
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"seconds": seconds, "rows_per_s": rows / seconds, "peak_rss_mib": peak_mib}


def measure(mode: str, data: Path, out: Path, rows: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", mode, str(data), str(out), str(rows)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{mode} on {rows} rows failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", nargs=4, metavar=("MODE", "DATA", "OUT", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, data, out, rows = args.child
        print(json.dumps(child(mode, Path(data), Path(out), int(rows))))
        return

    from support.ot3_rows import write_ot3_parquet

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        work = Path(tmp)
        results: dict[tuple[str, int], dict[str, float]] = {}
        for rows in args.sizes:
            data = work / f"data-{rows}"
            write_ot3_parquet(data, rows, max(1, rows // SHARD_ROWS))
            for mode in ("baseline", "filter", "select+filter"):
                results[mode, rows] = measure(mode, data, work / f"out-{mode}-{rows}", rows)
        print(f"{'mode':<15}{'rows':>9}{'seconds':>10}{'rows/s':>10}{'vs baseline':>13}{'peak RSS MiB':>14}")
        for (mode, rows), figures in results.items():
            ratio = figures["rows_per_s"] / results["baseline", rows]["rows_per_s"]
            print(
                f"{mode:<15}{rows:>9,}{figures['seconds']:>10.2f}{figures['rows_per_s']:>10,.0f}"
                f"{ratio:>12.2f}x{figures['peak_rss_mib']:>14.0f}"
            )
        small, large = min(args.sizes), max(args.sizes)
        for mode in ("filter", "select+filter"):
            growth = results[mode, large]["peak_rss_mib"] / results[mode, small]["peak_rss_mib"]
            print(f"peak RSS {mode}: {large:,} rows / {small:,} rows = {growth:.2f}x (flat is ~1.0x)")


if __name__ == "__main__":
    main()
