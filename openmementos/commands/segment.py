"""`openmementos segment`: cut every trace into sentences and blocks (SPEC 4.2-4.4)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from openmementos.segment.request import SegmentRequest

if TYPE_CHECKING:
    from openmementos.segment.stage import SegmentResult


def segment(request: SegmentRequest) -> None:
    """Cut each trace into lossless sentences and optimal blocks.

    Sentences are exact spans of the reasoning (joined, they give it back byte for byte); every boundary
    gets a score 0-3; the blocks maximise mean(cut scores) - λ·CV(block tokens) with every block at least
    --min-block-tokens (the true optimum). Resumable per shard; traces that cannot be cut go to
    OUT_DIR/quarantine/ with the reason.

    Examples:

      openmementos segment out/download out/segmented

      openmementos segment out/download out/segmented --max-block-tokens 1536 --workers 8

      openmementos segment out/segmented --explain ot3-train-0000030

      openmementos segment dl seg --scorer llm --model gpt-4.1-mini --second-window 11
    """
    if request.explain is not None:
        from rich.console import Console

        from openmementos.segment.explain import explain
        from openmementos.segment.stage import trace_to_explain

        explain(*trace_to_explain(request), Console())
        return
    from openmementos.segment.stage import run_segment

    report(run_segment(request))


def report(result: SegmentResult) -> None:
    manifest = result.manifest
    if result.scoring is not None:
        typer.echo(result.scoring)
    reasons = ", ".join(f"{reason}: {count:,}" for reason, count in manifest.reasons().most_common())
    typer.echo(
        f"segmented {manifest.rows:,} traces, quarantined {manifest.quarantined:,}"
        + (f" ({reasons})" if reasons else "")
        + ("" if manifest.complete else " · some shards are not done yet (other --shard runs, or rerun)")
    )
    if result.statistics is not None:
        typer.echo(result.statistics.render())
