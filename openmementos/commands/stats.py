"""`openmementos stats`: sizes, compression and the simulated peak-KV saving, next to the paper's."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from openmementos.stats.request import StatsRequest

if TYPE_CHECKING:
    from openmementos.stats import DatasetStats


def stats(request: StatsRequest) -> None:
    """Counts per domain and source, blocks per trace, tokens per block and memento, compression, peak KV.

    The peak-KV ratio is simulated per trace from token counts: the full context (prompt and every
    token) against the largest cache a memento model holds when it evicts each block once its memento
    is written (prompt + earlier mementos + current block and memento). The paper measured ~2.5x.

    `--csv` / `--parquet` write the per-trace figures behind every statistic (domain, source, token
    counts per block and memento, ratios, peak KV, judge scores, provenance) for a closer look.

    Example: openmementos stats out/demo/validate --plots out/demo/plots --parquet out/demo/traces.parquet
    """
    from openmementos.stats import run_stats

    result = run_stats(request)
    if request.json_output:
        typer.echo(result.stats.model_dump_json(indent=2))
        return
    print_stats(result.stats)
    for path in result.plots:
        typer.echo(f"plot: {path}")
    for path in result.exports:
        typer.echo(f"per-trace figures: {path}")


def print_stats(result: DatasetStats) -> None:
    from rich.console import Console
    from rich.table import Table

    from openmementos.stats import comparison_rows

    console = Console()
    table = Table(title=f"{result.traces:,} traces (the paper's figure in parentheses)", title_justify="left")
    table.add_column("figure")
    for domain in result.domains:
        table.add_column(domain, justify="right", style="bold" if domain == "all" else None)
    for label, cells in comparison_rows(result):
        table.add_row(label, *cells.values())
    console.print(table)
    kv = result.domains["all"].kv_ratio
    console.print(
        f"Peak KV with block eviction is [bold]{kv.mean:.2f}x[/] smaller on average (simulated from token "
        f"counts; median {kv.median:.2f}x) - the paper reports ~{result.paper.kv_ratio}x."
    )
    sources = Table(title="Sources", title_justify="left")
    for column in ("domain", "source", "traces"):
        sources.add_column(column, justify="right" if column == "traces" else "left")
    for domain, counts in result.sources.items():
        for source, count in counts.items():
            sources.add_row(domain, source, f"{count:,}")
    console.print(sources)
    if result.judge:
        score = result.judge.final_score
        console.print(
            f"Judge: {result.judge.judged_mementos:,} judged mementos, score of the version kept: "
            f"mean {score.mean:.2f} (p10 {score.p10:g}, median {score.median:g})"
        )
    if result.provenance:
        made = result.provenance
        usage = made.usage
        paid = (
            f"; {usage.requests:,} LLM requests, {usage.prompt_tokens + usage.completion_tokens:,} tokens, "
            f"${usage.cost_usd:,.2f}"
            if usage.requests
            else ""
        )
        annotators = ", ".join(f"{name} ({count:,})" for name, count in made.annotator_models.items())
        console.print(
            f"Made with: annotator {annotators}; scorer {', '.join(made.scorers)}; "
            f"tokenizer {', '.join(made.tokenizers)}{paid}"
        )
