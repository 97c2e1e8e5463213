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
    gets a score 0-3; the blocks maximise J = (s_1 + … + s_{K-1}) / K - λ·CV over K blocks with cut scores
    s_i, CV being the std / mean of the block token counts (the published objective: the first block
    counts as a cut of 0, so a block is added only for a cut stronger than the mean so far that does not
    cost more in balance), every block at least --min-block-tokens. The solver finds the true optimum.
    Resumable per shard; traces that cannot be cut go to OUT_DIR/quarantine/ with the reason.

    Examples:

      openmementos segment out/download out/segmented

      openmementos segment out/download out/trial --limit 20 --workers 2

      openmementos segment out/segmented --explain                       (list some trace ids)

      openmementos segment out/segmented --explain ot3-train-0000030

      openmementos segment dl seg --scorer llm --model gpt-4.1-mini --second-window 11 --estimate   (the price first)
    """
    if request.explain:
        from rich.console import Console

        from openmementos.segment.explain import explain_folder

        explain_folder(request.in_dir, request.trace_id, request.settings(), Console())
        return
    if request.estimate:
        from openmementos.segment.estimate import estimate_segment

        typer.echo("\n".join(estimate_segment(request).render()))
        return
    from openmementos.segment.stage import run_segment

    report(run_segment(request), request)


def report(result: SegmentResult, request: SegmentRequest) -> None:
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
        typer.echo(f"why a trace got its blocks: openmementos segment {request.out_dir} --explain [TRACE_ID]")
