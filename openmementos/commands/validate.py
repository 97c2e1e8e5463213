"""`openmementos validate`: check every annotated trace before it can be published."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from openmementos.commands import resumable_on_interrupt

if TYPE_CHECKING:
    from openmementos.validate import ValidationReport


def validate(
    in_dir: Annotated[Path, typer.Argument(help="A finished `annotate` output folder.", file_okay=False)],
    out_dir: Annotated[
        Path,
        typer.Argument(help="Where the traces that pass go (what `publish` reads); failures go to OUT_DIR/quarantine."),
    ],
    report: Annotated[
        Path | None, typer.Option(help="Also write the rule -> failures report as JSON to this file.")
    ] = None,
    strict: Annotated[bool, typer.Option(help="Exit with status 1 if any trace failed a rule.")] = False,
    min_ratio: Annotated[float, typer.Option(help="Smallest allowed memento/block token ratio.")] = 0.02,
    max_ratio: Annotated[float, typer.Option(help="Largest allowed memento/block token ratio.")] = 1.0,
    min_judge_score: Annotated[
        float, typer.Option(help="Judged mementos need a score of at least this (0-10) for the version kept.")
    ] = 8.0,
    require_ascii: Annotated[
        bool, typer.Option(help="Mementos must be plain ASCII (the recipe's plain-ASCII math rule).")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="Processes validating shards in parallel.")] = 1,
) -> None:
    """Check every invariant and memento rule; passing traces go to OUT_DIR, failing ones to quarantine.

    Rules: lossless sentence spans, contiguous blocks, consistent counts, unique ids, no delimiter in
    the source texts, a non-empty answer, and for every memento: non-empty, no delimiter, no placeholder
    text, plain ASCII (with --require-ascii), a memento/block token ratio within bounds, a judge score at
    or above the threshold (when judged), and a response that parses back to the same blocks and
    mementos. A failing trace is quarantined once, with every rule it broke. Resumable per shard.

    Example: openmementos validate out/annotate out/validate --report out/validate/report.json --strict
    """
    from pydantic import ValidationError

    from openmementos.shards import StageError
    from openmementos.validate import ValidationRules, build_report, run_validate

    try:
        rules = ValidationRules(
            min_ratio=min_ratio, max_ratio=max_ratio, min_judge_score=min_judge_score, require_ascii=require_ascii
        )
    except ValidationError as error:
        raise typer.BadParameter(error.errors()[0]["msg"]) from None
    try:
        with resumable_on_interrupt():
            manifest = run_validate(in_dir, out_dir, rules, workers=workers)
    except StageError as error:
        raise typer.BadParameter(str(error)) from None
    result = build_report(manifest, out_dir)
    print_report(result, out_dir)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result.to_json(), indent=2) + "\n")
    if strict and not result.ok:
        raise typer.Exit(1)


def print_report(report: ValidationReport, out_dir: Path) -> None:
    """The rule -> failures table and the totals."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Validation", title_justify="left")
    table.add_column("rule")
    table.add_column("failing traces", justify="right")
    table.add_column("first example")
    checked_ascii = report.options.get("require_ascii", False)
    for rule in report.rules:
        failures = str(rule.failures) if rule.rule != "memento_ascii" or checked_ascii else "not checked"
        style = "red" if rule.failures else None
        table.add_row(rule.rule, failures, rule.examples[0] if rule.examples else "", style=style)
    console = Console()
    console.print(table)
    verdict = "[green]all passed[/]" if report.ok else f"[red]{report.quarantined:,} quarantined[/]"
    console.print(
        f"{report.traces:,} traces: {report.passed:,} passed, {verdict} -> {out_dir} "
        f"(failures with every reason: {out_dir / 'quarantine'})"
    )
