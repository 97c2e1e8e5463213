"""`openmementos download`: reasoning traces in, clean `SourceTrace` shards out."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from openmementos.commands import resumable_on_interrupt

if TYPE_CHECKING:
    from openmementos.download import DownloadResult

SELECTION = "Stratified selection"
MAPPING = "Column mapping (corpora not shaped like OpenThoughts3)"
FILTERS = "Filters"


def download(
    out_dir: Annotated[Path, typer.Argument(help="Output folder: part-*.parquet, quarantine/, manifest.json.")],
    dataset: Annotated[
        str | None,
        typer.Option(help="Hub dataset id. Default: open-thoughts/OpenThoughts3-1.2M.", show_default=False),
    ] = None,
    revision: Annotated[
        str, typer.Option(help="Branch, tag or commit; recorded as the commit it resolves to.")
    ] = "main",
    config: Annotated[str | None, typer.Option(help="Dataset config (default: the dataset's default).")] = None,
    split: Annotated[str, typer.Option(help="Split to read (Hub datasets and save_to_disk folders).")] = "train",
    input: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="Read local files instead of the Hub: a .parquet/.jsonl/.arrow file, a folder of them, a "
            "datasets save_to_disk folder, or the output of an earlier `openmementos download`.",
        ),
    ] = None,
    sample: Annotated[
        bool, typer.Option("--sample", help="Use the ~30 traces embedded in the package (offline; the demo's input).")
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="Draw exactly this many input rows (before the filters).", rich_help_panel=SELECTION),
    ] = None,
    ratio: Annotated[
        list[str] | None,
        typer.Option(
            metavar="DOMAIN=WEIGHT",
            help="Target share of a domain, repeatable (normalised to sum to 1). Default: the input's own shares.",
            rich_help_panel=SELECTION,
        ),
    ] = None,
    domains: Annotated[
        str | None,
        typer.Option(help="Comma-separated domains to keep (e.g. math,code).", rich_help_panel=SELECTION),
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the selection hash.", rich_help_panel=SELECTION)] = 42,
    shard: Annotated[
        str | None,
        typer.Option(metavar="I/N", help="Process only input files I, I+N, I+2N, ... (runs on N machines)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(min=1, help="Input files processed in parallel (processes). Default: CPU cores, at most 8."),
    ] = None,
    min_sentences: Annotated[
        int, typer.Option(min=1, help="Quarantine traces whose reasoning has fewer sentences.", rich_help_panel=FILTERS)
    ] = 2,
    keep_cjk: Annotated[
        bool,
        typer.Option(
            "--keep-cjk",
            help="Keep traces with CJK characters (for corpora in those languages).",
            rich_help_panel=FILTERS,
        ),
    ] = False,
    messages_column: Annotated[
        str | None,
        typer.Option(help="Column of {from,value} or {role,content} turns.", rich_help_panel=MAPPING),
    ] = None,
    problem_column: Annotated[str | None, typer.Option(help="Column of the problem.", rich_help_panel=MAPPING)] = None,
    reasoning_column: Annotated[
        str | None,
        typer.Option(
            help="Column of the reasoning: with <think>...</think> (then an answer may follow it) or bare.",
            rich_help_panel=MAPPING,
        ),
    ] = None,
    answer_column: Annotated[
        str | None, typer.Option(help="Column of the final answer.", rich_help_panel=MAPPING)
    ] = None,
    id_column: Annotated[
        str | None,
        typer.Option(
            help="Column of a trace id (default: id or task_id, else a content hash).", rich_help_panel=MAPPING
        ),
    ] = None,
    domain_column: Annotated[str, typer.Option(help="Column of the domain.", rich_help_panel=MAPPING)] = "domain",
    source_column: Annotated[str, typer.Option(help="Column of the source.", rich_help_panel=MAPPING)] = "source",
    difficulty_column: Annotated[
        str, typer.Option(help="Column of the integer difficulty (optional).", rich_help_panel=MAPPING)
    ] = "difficulty",
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="FIELD=VALUE",
            help="Give every row this domain, source or difficulty, e.g. --set source=my-teacher.",
            rich_help_panel=MAPPING,
        ),
    ] = None,
) -> None:
    """Fetch reasoning traces and write clean SourceTrace shards, one per input file.

    Rows are converted (problem, reasoning between <think> and </think>, answer) and filtered: an
    unclosed <think> (truncated generation), CJK characters, fewer than --min-sentences sentences or an
    empty answer send a row to quarantine/ with the reason; every count is in manifest.json. A rerun
    resumes: finished files are not read again.

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
    from openmementos.download import DEFAULT_DATASET, DownloadRequest, run_download
    from openmementos.download.filters import Filters
    from openmementos.download.mapping import ColumnMapping
    from openmementos.download.sampling import SelectionRequest
    from openmementos.shards import ShardSelection, StageError

    if sum(map(bool, (dataset, input, sample))) > 1:
        raise typer.BadParameter("choose one of --dataset, --input and --sample")
    try:
        selection = None
        if limit is not None or ratio or domains:
            selection = SelectionRequest(
                seed=seed,
                limit=limit,
                ratios=tuple(_parse_ratios(ratio or [])),
                domains=tuple(d.strip() for d in (domains or "").split(",") if d.strip()),
            )
        request = DownloadRequest(
            out_dir=out_dir,
            dataset=dataset or DEFAULT_DATASET,
            revision=revision,
            config=config,
            split=split,
            input=input,
            sample=sample,
            mapping=ColumnMapping(
                messages=messages_column,
                problem=problem_column,
                reasoning=reasoning_column,
                answer=answer_column,
                id=id_column,
                domain=domain_column,
                source=source_column,
                difficulty=difficulty_column,
                fixed=_parse_fixed(set_ or []),
            ),
            filters=Filters(min_sentences=min_sentences, keep_cjk=keep_cjk),
            selection=selection,
            shard=ShardSelection.parse(shard),
            workers=workers or min(8, os.cpu_count() or 1),
        )
        with resumable_on_interrupt():
            result = run_download(request)
    except (ValueError, StageError) as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from error
    except OSError as error:  # network or disk failure mid-run
        typer.secho(f"error: {error}\nfinished shards are kept: rerun the same command to resume", fg="red", err=True)
        raise typer.Exit(1) from error
    _report(result, out_dir)


def _parse_ratios(texts: list[str]) -> list[tuple[str, Fraction]]:
    ratios: dict[str, Fraction] = {}
    for text in texts:
        domain, _, weight = text.partition("=")
        try:
            value = Fraction(weight.strip())
        except ValueError:
            raise ValueError(f"--ratio {text!r}: expected DOMAIN=WEIGHT, e.g. math=0.54") from None
        if not domain.strip() or value < 0:
            raise ValueError(f"--ratio {text!r}: expected DOMAIN=WEIGHT with a weight >= 0")
        ratios[domain.strip()] = value
    return sorted(ratios.items())


def _parse_fixed(texts: list[str]) -> dict[str, str | int]:
    fixed: dict[str, str | int] = {}
    for text in texts:
        name, _, value = text.partition("=")
        name = name.strip()
        if name not in ("domain", "source", "difficulty") or not value:
            raise ValueError(f"--set {text!r}: expected domain=..., source=... or difficulty=N")
        if name == "difficulty":
            try:
                fixed[name] = int(value)
            except ValueError:
                raise ValueError(f"--set {text!r}: the difficulty must be an integer") from None
        else:
            fixed[name] = value
    return fixed


def _report(result: DownloadResult, out_dir: Path) -> None:
    manifest = result.manifest
    reasons = ", ".join(f"{reason} {count:,}" for reason, count in manifest.reasons().most_common())
    typer.echo(
        f"{manifest.rows:,} traces written, {manifest.quarantined:,} quarantined"
        + (f" ({reasons})" if reasons else "")
        + f"; {len(manifest.done)}/{manifest.shards_total} shards done"
    )
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
