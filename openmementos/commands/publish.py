"""`openmementos publish`: validated traces as the public configs, with a card, to the Hub or a folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from openmementos.publish.request import PublishRequest

if TYPE_CHECKING:
    from openmementos.publish import PublishResult


def publish(request: PublishRequest) -> None:
    """Publish validated traces as the `default` and `full` configs with a dataset card.

    Writes data/train-*.parquet (problem, response, domain, source, difficulty) and full/train-*.parquet
    (+ sentences, blocks, block_summaries) with the public OpenMementos column names and types, plots
    and a README.md card (statistics, recipe and annotator model, how to load and train, limitations).
    The same input always gives the same files. To the Hub it is one commit: readers never see half a
    dataset, unchanged files are not uploaded again, and publishing unchanged data makes no commit.

    Examples:

      openmementos publish out/validate --to out/published

      openmementos publish out/validate --repo-id my-org/my-mementos --private
    """
    from openmementos.publish import run_publish

    report(run_publish(request), request.dry_run)


def report(result: PublishResult, dry_run: bool) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    built = result.build
    configs = ", ".join(f"{c.name} {c.rows:,} rows in {c.files} file(s)" for c in built.configs)
    if dry_run:
        table = Table(title=f"Would publish to {result.target}", title_justify="left")
        table.add_column("file")
        table.add_column("bytes", justify="right")
        for path in built.files:
            table.add_row(path, f"{built.sizes[path]:,}")
        console.print(table)
        console.print(built.card, markup=False, highlight=False)
        verdict = "would change" if result.changed else "is already up to date:"
        console.print(f"[bold]dry run[/]: {result.target} {verdict} {configs}; nothing was written.")
        return
    if not result.changed:
        console.print(f"{result.target} is already up to date ({configs}): nothing to publish.")
        return
    where = f"{result.target} (commit {result.commit[:12]})" if result.commit else result.target
    console.print(f"published {built.traces:,} traces to {where}: {configs}")
    if result.removed:
        console.print(f"removed {len(result.removed)} file(s) of the previous publish: {', '.join(result.removed[:5])}")
    console.print(f'load it: datasets.load_dataset("{result.target}", "full", split="train")')
