"""`openmementos download`: reasoning traces in, clean `SourceTrace` shards out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from openmementos.download.request import DownloadRequest

if TYPE_CHECKING:
    from openmementos.download import DownloadResult
    from openmementos.runtime.manifest import Manifest


def download(request: DownloadRequest) -> None:
    """Fetch reasoning traces and write clean SourceTrace shards, one per input file.

    Rows are converted (problem, reasoning between <think> and </think>, answer) and filtered: an
    unclosed <think> (truncated generation), CJK characters, fewer than --min-sentences sentences or an
    empty answer send a row to quarantine/ with the reason; every count is in manifest.json.

    A file that cannot be read at all (corrupt, truncated, another format) is quarantined by name with
    the reader's reason and the run goes on with the others (a warning says so). A rerun resumes:
    finished files are not read again, nor unreadable ones unless --retry-unreadable.

    With --limit, --ratio or --domains, rows are drawn by a stratified selection first: exact quotas per
    (domain, source, difficulty), filled by a seeded hash of each row's position, planned from the
    metadata columns alone. Every --shard I/N split selects the same rows. To set quotas on clean rows,
    download everything first, then select from that folder with --input.

    Examples:

      openmementos download out/ot3 --limit 300000 --ratio math=0.54 --ratio science=0.27 --ratio code=0.19

      openmementos download out/demo --sample

      openmementos download out/mine --input traces.jsonl --problem-column question --reasoning-column cot
      --set domain=math --set source=my-teacher
    """
    from openmementos.download import run_download

    report(run_download(request), request.out_dir)


def report(result: DownloadResult, out_dir: Path) -> None:
    manifest = result.manifest
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in manifest.reasons().most_common())
    typer.echo(
        f"{manifest.rows:,} traces written, {manifest.quarantined:,} quarantined"
        + (f" ({reasons})" if reasons else "")
        + f"; {len(manifest.done)}/{manifest.shards_total} shards done"
    )
    if manifest.unreadable:
        typer.secho(f"warning: {unreadable_line(manifest)}", fg="yellow", err=True)
    if result.plan is not None:
        summary = result.plan.summary
        drawn = ", ".join(f"{domain} {count:,}" for domain, count in summary["drawn"].items())
        typer.echo(f"selection: drew {drawn}; {summary['not_selected']:,} rows not selected")
        for domain, missing in summary["shortfall"].items():
            typer.secho(f"warning: domain {domain} has {missing:,} rows fewer than its target", fg="yellow", err=True)
    if manifest.complete:
        typer.echo(f"complete: {out_dir} (next: openmementos segment {out_dir} OUT)")
    else:
        typer.echo(f"incomplete: rerun with the other --shard values (or none) into {out_dir} to finish")


def unreadable_line(manifest: Manifest, shown: int = 3) -> str:
    """One line on the input files that could not be read: how many, which, and why."""
    files = manifest.unreadable
    listed = "; ".join(f"{f.source} ({f.reason})" for f in files[:shown])
    more = f"; and {len(files) - shown} more (manifest.json lists them)" if len(files) > shown else ""
    noun = "file" if len(files) == 1 else "files"
    return (
        f"{len(files)} input {noun} could not be read and {'was' if len(files) == 1 else 'were'} quarantined whole: "
        f"{listed}{more}. A rerun leaves {'it' if len(files) == 1 else 'them'} out; --retry-unreadable reads "
        f"{'it' if len(files) == 1 else 'them'} again"
    )
