"""`openmementos stats`: sizes, compression and the simulated peak-KV saving, next to the paper's."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from openmementos.stats import DatasetStats


def stats(
    in_dir: Annotated[
        Path,
        typer.Argument(
            help="An `annotate` or `validate` output folder, or a published folder (`publish --to DIR`).",
            exists=True,
            file_okay=False,
        ),
    ],
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the statistics as JSON (and nothing else) on stdout.")
    ] = False,
    plots: Annotated[
        Path | None, typer.Option(help="Write PNG plots (compression, peak-KV ratio, blocks per trace) here.")
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="Count tokens with this tiktoken encoding or tokenizer.json path instead of the rows' own "
            "(published folders: default cl100k_base)."
        ),
    ] = None,
    csv: Annotated[
        Path | None,
        typer.Option(help="Write the per-trace figures (one row per trace) as CSV here; list columns as JSON."),
    ] = None,
    parquet: Annotated[
        Path | None, typer.Option(help="Write the per-trace figures (one row per trace) as parquet here.")
    ] = None,
) -> None:
    """Counts per domain and source, blocks per trace, tokens per block and memento, compression, peak KV.

    The peak-KV ratio is simulated per trace from token counts: the full context (prompt and every
    token) against the largest cache a memento model holds when it evicts each block once its memento
    is written (prompt + earlier mementos + current block and memento). The paper measured ~2.5x.

    `--csv` / `--parquet` write the per-trace figures behind every statistic (domain, source, token
    counts per block and memento, ratios, peak KV, judge scores, provenance) for a closer look.

    Example: openmementos stats out/demo/validate --plots out/demo/plots --parquet out/demo/traces.parquet
    """
    from openmementos.stats import collect, dataset_stats, write_frame, write_plots

    try:
        frame = collect(in_dir, tokenizer, progress=not json_output)
        result = dataset_stats(frame)
    except (FileNotFoundError, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint="IN_DIR") from None
    written = write_plots(frame, plots) if plots else []
    exports = [(path, format) for path, format in ((csv, "csv"), (parquet, "parquet")) if path]
    for path, format in exports:
        try:
            write_frame(frame, path, format)
        except OSError as error:
            raise typer.BadParameter(f"cannot write {path}: {error}", param_hint=f"--{format}") from None
    if json_output:
        typer.echo(result.model_dump_json(indent=2))
        return
    print_stats(result)
    for path in written:
        typer.echo(f"plot: {path}")
    for path, _ in exports:
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
