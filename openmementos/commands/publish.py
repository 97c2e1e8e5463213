"""`openmementos publish`: validated traces as a loadable dataset, to a folder or the Hugging Face Hub."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from openmementos.publish import PublishResult

CARD_PANEL = "Dataset card"
"""The --help panel of the options that only shape the card."""


def publish(
    in_dir: Annotated[Path, typer.Argument(help="A finished `validate` output folder.", file_okay=False)],
    repo_id: Annotated[
        str | None, typer.Option(metavar="ORG/NAME", help="Publish to this Hub dataset repo (created if missing).")
    ] = None,
    to: Annotated[
        Path | None, typer.Option(metavar="DIR", help="Publish to this local folder instead (replaced atomically).")
    ] = None,
    private: Annotated[bool, typer.Option(help="Create the Hub repo as private.")] = False,
    token: Annotated[
        str | None,
        typer.Option(help="Hub token. Default: $HF_TOKEN or your `hf auth login`. Never printed.", show_default=False),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build and show what would be published, change nothing.")
    ] = False,
    pretty_name: Annotated[
        str | None,
        typer.Option(help="Dataset title on the card. Default: the repo or folder name.", rich_help_panel=CARD_PANEL),
    ] = None,
    license: Annotated[str, typer.Option(help="License id for the card's metadata.", rich_help_panel=CARD_PANEL)] = (
        "apache-2.0"
    ),
    source_dataset: Annotated[
        list[str] | None,
        typer.Option(
            help="Hub id of the source traces, repeatable. Default: what `download` read (see --lineage).",
            rich_help_panel=CARD_PANEL,
        ),
    ] = None,
    lineage: Annotated[
        list[Path] | None,
        typer.Option(
            help="Earlier stage folders (download, segment, annotate, in order), repeatable: their settings "
            "and counts go into the card's recipe. `openmementos run` passes them.",
            rich_help_panel=CARD_PANEL,
        ),
    ] = None,
    rows_per_shard: Annotated[int, typer.Option(min=1, help="Traces per parquet file of each config.")] = 5000,
) -> None:
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
    from openmementos.publish import PublishError, PublishSettings
    from openmementos.publish import publish as run_publish

    settings = PublishSettings(
        pretty_name=pretty_name,
        license=license,
        source_datasets=tuple(source_dataset or ()),
        lineage=tuple(lineage or ()),
        rows_per_shard=rows_per_shard,
    )
    try:
        result = run_publish(
            in_dir, repo_id=repo_id, to=to, private=private, token=token, dry_run=dry_run, settings=settings
        )
    except PublishError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    report(result, dry_run)


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
