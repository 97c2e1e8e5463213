"""`openmementos validate`: check every annotated trace before it can be published."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from openmementos.validate.request import ValidateRequest

if TYPE_CHECKING:
    from openmementos.validate import ValidationReport


def validate(request: ValidateRequest) -> None:
    """Check every invariant and memento rule; passing traces go to OUT_DIR, failing ones to quarantine.

    Rules: lossless sentence spans, contiguous blocks, consistent counts, unique ids, no delimiter in
    the source texts, a non-empty answer, and for every memento: non-empty, no delimiter, no placeholder
    text, plain ASCII (with --require-ascii), a memento/block token ratio within bounds, a judge score at
    or above the threshold (when judged), and a response that parses back to the same blocks and
    mementos. A failing trace is quarantined once, with every rule it broke. Resumable per shard.

    Example: openmementos validate out/annotate out/validate --report out/validate/report.json --strict
    """
    from openmementos.validate import run_validate

    result = run_validate(request)
    print_report(result.report, request.out_dir)
    if request.strict and not result.report.ok:
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
