"""Tokens sent and cost per annotated trace: single pass, per-memento judge, per-trace judge, with and
without provider prefix caching, in one run.

Runs `openmementos annotate` on the embedded sample (cut into blocks of >= 300 cl100k tokens at
paragraph ends) against the loopback OpenAI stand-in, which caches prompt prefixes like OpenAI does
(prefixes of >= 1,024 tokens, 128-token steps; a character-based approximation, see
`support.openai_standin.PrefixCache`) and reports them in `usage.prompt_tokens_details.cached_tokens`.
Its scripted model answers like a real one in size (`support.annotate_script.sized_responder`): the
compressor returns an extractive memento per block (~15 % of the block), the judge passes 28 % of
first drafts and 90 % of refined ones (the published single-pass and refined pass rates), seeded by
the text, whichever judge mode asks, so both modes reach the same pass rate.

"without caching" prices the same run's tokens at the full input price; "with caching" prices the
cached prompt tokens at the model's cached-input rate. The baseline is today's recipe, the per-memento
judge (with caching, which barely helps it: its requests are short), measured in the same run. The
`--estimate` figure of each recipe is printed next to what the run then sent.

    .venv/bin/python benchmarks/bench_annotate_tokens.py [--copies 4]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import support_path  # noqa: F401  (tests/ on the path, for `support`)
from support.annotate_script import segmented_sample, sized_responder
from support.openai_standin import Faults, OpenAIStandIn
from typer.testing import CliRunner

from openmementos.annotate import AnnotateRequest, estimate_annotate
from openmementos.cli import app
from openmementos.llm import PriceTable
from openmementos.runtime.stage import ShardTask, Stage
from openmementos.schema import SegmentedTrace

MODEL = "gpt-4.1-mini"
RECIPES = {"single pass": "off", "per-memento judge": "per-memento", "per-trace judge": "per-trace"}
OPENAI_CACHING = Faults(prefix_cache_min_tokens=1024)


def write_segmented(folder: Path, traces: list[SegmentedTrace]) -> None:
    tasks = [ShardTask(0, "part-00000", traces)]
    Stage(name="segment", out_dir=folder, model=SegmentedTrace, process=_emit).run(tasks)


def _emit(task: ShardTask[list[SegmentedTrace]]) -> list[SegmentedTrace]:
    return task.source


def annotate(in_dir: Path, out_dir: Path, base_url: str, judge: str) -> dict[str, Any]:
    args = ["annotate", str(in_dir), str(out_dir), "--model", MODEL, "--base-url", base_url, "--api-key", "bench"]
    result = CliRunner().invoke(app, [*args, "--judge", judge])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return json.loads((out_dir / "annotate_report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of each sample trace (distinct requests)")
    args = parser.parse_args()
    traces = segmented_sample(args.copies)
    reasoning = sum(sum(t.block_tokens) for t in traces) / len(traces)
    blocks = sum(len(t.blocks) for t in traces) / len(traces)
    reports, estimates = {}, {}
    with tempfile.TemporaryDirectory() as tmp, OpenAIStandIn(OPENAI_CACHING, responder=sized_responder) as server:
        root = Path(tmp)
        write_segmented(root / "segmented", traces)
        for name, judge in RECIPES.items():
            server.set_faults(OPENAI_CACHING)  # an empty prefix cache for each recipe
            out = root / judge
            estimates[name] = estimate_annotate(
                AnnotateRequest(in_dir=root / "segmented", out_dir=out, model=MODEL, judge=judge)
            )
            reports[name] = annotate(root / "segmented", out, server.base_url, judge)
    price = PriceTable().price(MODEL)
    assert price is not None
    print(f"{len(traces)} traces, {blocks:.1f} blocks and {reasoning:,.0f} reasoning tokens per trace (cl100k)")
    print(
        f"{'recipe':<20}{'requests':>9}{'prompt tok':>12}{'cached':>9}{'answer tok':>12}{'estimate':>10}"
        f"{'$/1K no cache':>15}{'$/1K cached':>13}{'passed':>8}"
    )
    cost = {}
    for name, report in reports.items():
        per = report["usage"]["per_trace"]
        plain = price.cost(round(per["prompt_tokens"] * 1000), round(per["completion_tokens"] * 1000))
        cached = price.cost(
            round(per["prompt_tokens"] * 1000),
            round(per["completion_tokens"] * 1000),
            round(per["cached_prompt_tokens"] * 1000),
        )
        cost[name] = (plain, cached)
        rates = report.get("judge", {}).get("pass_rate_after_round", {})
        passed = f"{list(rates.values())[-1]:.0%}" if rates else "-"
        estimated = estimates[name].trace_total().prompt_tokens
        print(
            f"{name:<20}{per['requests']:>9.1f}{per['prompt_tokens']:>12,.0f}{per['cached_prompt_tokens']:>9,.0f}"
            f"{per['completion_tokens']:>12,.0f}{estimated:>10,.0f}{plain:>15.2f}{cached:>13.2f}{passed:>8}"
        )
    baseline = cost["per-memento judge"][1]
    ratio = cost["per-trace judge"][1] / baseline
    unc = cost["per-trace judge"][0] / baseline
    print(
        f"per-trace judge + caching costs {ratio:.2f}x the per-memento judge (baseline, same run; goal <= 0.6x); "
        f"without caching {unc:.2f}x"
    )
    for name in ("per-memento judge", "per-trace judge"):
        rates = ", ".join(
            f"after round {k}: {v:.0%}" for k, v in reports[name]["judge"]["pass_rate_after_round"].items()
        )
        steps = ", ".join(
            f"{step} {usage['prompt_tokens'] / len(traces):,.0f}"
            for step, usage in reports[name]["usage"]["by_step"].items()
        )
        print(f"{name}: pass rate {rates}; prompt tokens per trace by step: {steps}")
    print(
        f"prices: {MODEL} at ${price.input_per_mtok}/M in, ${price.cached_input_per_mtok}/M cached in, "
        f"${price.output_per_mtok}/M out (Batch API: half)"
    )


if __name__ == "__main__":
    main()
