"""`openmementos annotate`: write a memento for every block (SPEC 4.5-4.6)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from openmementos.annotate.request import REPORT_FILE, AnnotateRequest
from openmementos.llm.pricing import cached_share


def annotate(request: AnnotateRequest) -> None:
    """Write one memento per block: compress, judge, refine; or offline with --model extractive.

    Paid answers are cached as they arrive (OUT_DIR/.llm): a rerun after a crash or Ctrl-C pays nothing twice.

    Traces without a full set of usable mementos go to OUT_DIR/quarantine/ with the reason.

    Tokens, cost, judge pass rates and quarantine reasons: OUT_DIR/annotate_report.json.

    Examples:

      openmementos annotate out/segmented out/annotated   (offline, extractive)

      openmementos annotate seg ann --model gpt-4.1-mini --judge per-trace --estimate   (the price first)

      openmementos annotate seg ann --model gpt-4.1-mini --limit 100   (trial run)

      openmementos annotate seg ann --model M --base-url http://gpu1:8000/v1 --base-url http://gpu2:8000/v1
    """
    if request.estimate:
        from openmementos.annotate.estimate import estimate_annotate

        typer.echo("\n".join(estimate_annotate(request).render()))
        return
    from openmementos.annotate.stage import run_annotate
    from openmementos.llm.errors import ConfigurationError, LLMError
    from openmementos.runtime.manifest import StageError

    sharded = request.shard.count > 1
    try:
        result = run_annotate(request)
    except (KeyboardInterrupt, LLMError, StageError) as stopped:  # what the stopped run did, then the error
        path = request.out_dir / REPORT_FILE
        if not isinstance(stopped, ConfigurationError) and path.exists():
            print_report(json.loads(path.read_text()), path, stopped=True, sharded=sharded)
        raise
    print_report(result.report, result.report_path, stopped=False, sharded=sharded)


def print_report(data: dict[str, Any], path: Path, stopped: bool, sharded: bool) -> None:
    """The run report in a few lines; `stopped`: the run was interrupted or failed."""
    traces, usage = data["traces"], data["usage"]["total"]
    reasons = ", ".join(f"{reason}: {count}" for reason, count in traces["quarantine_reasons"].items())
    lines = [
        f"annotated {traces['annotated']:,} traces, quarantined {traces['quarantined']:,}"
        + (f" ({reasons})" if reasons else ""),
        f"LLM usage: {usage['requests']:,} requests, {usage['prompt_tokens']:,} prompt "
        f"({usage.get('cached_prompt_tokens', 0):,} cached, "
        f"{cached_share(usage.get('cached_prompt_tokens', 0), usage['prompt_tokens'])}) + "
        f"{usage['completion_tokens']:,} completion tokens, ${usage['cost_usd']:.4f}",
        f"memento/block tokens: {data['compression']['memento_to_block_ratio']:.3f}",
    ]
    if judge := data.get("judge"):
        rates = ", ".join(f"round {k}: {v:.0%}" for k, v in judge["pass_rate_after_round"].items())
        lines.append(f"judge ({judge.get('mode')}) pass rate (>= {judge['threshold']:g}) after {rates}")
    if engine := data["last_run"]["engine"]:
        lines.append(
            f"this run: {engine['sent']:,} requests sent, {engine['cache_hits']:,} answers from the cache, "
            f"${engine['cost_usd']:.4f} paid"
        )
        forms = ", ".join(f"{url}: {form}" for url, form in engine.get("structured_output", {}).items())
        if forms:
            lines.append(f"structured output: {forms}")
        lines += [f"note: {note}" for note in engine.get("notes", [])]
    if not data["complete"]:
        hint = "run the other --shard parts" if sharded and not stopped else "rerun the same command to resume"
        lines.append(f"{data['shards']['done']}/{data['shards']['total']} shards done ({hint})")
    lines.append(f"report: {path}")
    typer.echo("\n".join(lines))
