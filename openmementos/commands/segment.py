"""`openmementos segment`: cut every trace into sentences and blocks (SPEC 4.2-4.4)."""

from __future__ import annotations

import math
import os
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from openmementos.commands import resumable_on_interrupt
from openmementos.segment.partition import Objective

if TYPE_CHECKING:
    from openmementos.segment.stage import SegmentSettings

BLOCKS = "Blocks"
LLM = "LLM scorer (--scorer llm)"


class Scorer(StrEnum):
    heuristic = "heuristic"
    llm = "llm"


def segment(
    in_dir: Annotated[
        Path,
        typer.Argument(
            help="Output folder of `download` (SourceTrace shards). With --explain: a `segment` output folder, "
            "or a `download` folder to segment that one trace on the fly (heuristic scorer, the options given)."
        ),
    ],
    out_dir: Annotated[
        Path | None,
        typer.Argument(
            metavar="[OUT_DIR | TRACE_ID]",
            help="Where SegmentedTrace shards, quarantine/ and manifest.json go. With --explain: the trace to "
            "explain (none: list some trace ids).",
            show_default=False,
        ),
    ] = None,
    scorer: Annotated[
        Scorer, typer.Option(help="Boundary scorer: rule-based (offline, deterministic) or an LLM over windows.")
    ] = Scorer.heuristic,
    objective: Annotated[
        Objective,
        typer.Option(
            help="J to maximise. published: sum(cut scores) / K - λ·CV, the first block counting as a cut of 0 "
            "(the MEMENTO recipe: each block must earn its place; ~9 blocks of ~1,150 tokens on OpenThoughts "
            "traces). per-cut: sum / (K - 1) - λ·CV, the mean over the cuts only (almost always 2 blocks).",
            rich_help_panel=BLOCKS,
        ),
    ] = Objective.published,
    lam: Annotated[
        float,
        typer.Option("--lambda", min=0, help="Weight λ of the block-size CV in J.", rich_help_panel=BLOCKS),
    ] = 0.5,
    min_block_tokens: Annotated[
        int, typer.Option(min=0, help="Every block has at least this many tokens.", rich_help_panel=BLOCKS)
    ] = 200,
    max_block_tokens: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Hard cap on block tokens (default: none, as in the published recipe). Traces that cannot "
            "meet it are quarantined.",
            rich_help_panel=BLOCKS,
        ),
    ] = None,
    tokenizer: Annotated[
        str,
        typer.Option(help="Token counts: a tiktoken encoding or a path to a tokenizer.json.", rich_help_panel=BLOCKS),
    ] = "cl100k_base",
    workers: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Processes, one input shard each at a time (heuristic scorer; the LLM scorer runs its requests "
            "concurrently in one process). Default: CPU count, at most 8.",
        ),
    ] = None,
    shard: Annotated[str | None, typer.Option(help="Process only shards I mod N of the input: I/N.")] = None,
    limit: Annotated[
        int | None, typer.Option(min=0, help="Segment only the first N traces, in shard order (trial runs).")
    ] = None,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Print one trace's blocks, cut scores, sizes and rules, and the best J at nearby block counts; "
            "write nothing. Without a TRACE_ID: list some trace ids.",
        ),
    ] = False,
    model: Annotated[str | None, typer.Option(help="Scoring LLM.", rich_help_panel=LLM)] = None,
    base_url: Annotated[
        list[str] | None,
        typer.Option(help="OpenAI-compatible endpoint, repeatable. Default: $OPENAI_BASE_URL.", rich_help_panel=LLM),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(help="Default: $OPENAI_API_KEY. Never written anywhere.", show_default=False, rich_help_panel=LLM),
    ] = None,
    window: Annotated[int, typer.Option(min=2, help="Boundaries per LLM request.", rich_help_panel=LLM)] = 16,
    second_window: Annotated[
        int | None,
        typer.Option(
            help="Also score with windows of this size (coprime to --window, e.g. 11) and average into half points.",
            rich_help_panel=LLM,
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.", rich_help_panel=LLM)] = 32,
    cache_dir: Annotated[
        Path | None,
        typer.Option(help="Response cache folder (default OUT_DIR/.llm).", rich_help_panel=LLM),
    ] = None,
) -> None:
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

      openmementos segment dl seg --scorer llm --model gpt-4.1-mini --second-window 11
    """
    from openmementos.llm import LLMError
    from openmementos.segment.stage import SegmentSettings
    from openmementos.shards import StageError

    try:
        settings = SegmentSettings(lam, min_block_tokens, max_block_tokens, tokenizer, objective, limit)
        if explain:
            _explain(in_dir, None if out_dir is None else str(out_dir), settings)
            return
        if out_dir is None:
            raise typer.BadParameter("give OUT_DIR (or --explain [TRACE_ID])", param_hint="OUT_DIR")
        if scorer is Scorer.heuristic:
            _run_heuristic(in_dir, out_dir, settings, workers or min(8, os.cpu_count() or 1), shard)
        else:
            if not model:
                raise typer.BadParameter("--scorer llm needs --model", param_hint="--model")
            if second_window is not None and math.gcd(window, second_window) != 1:
                raise typer.BadParameter(
                    "use a window coprime to --window (e.g. 16 and 11)", param_hint="--second-window"
                )
            _run_llm(
                in_dir, out_dir, settings, shard, model, base_url or [], api_key, window, second_window, concurrency,
                cache_dir,
            )  # fmt: skip
    except (StageError, LLMError, ValueError) as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None


def _tasks(in_dir: Path, shard: str | None, settings: SegmentSettings) -> tuple[list[Any], Any, Any]:
    """The shard tasks, the selection and the per-shard --limit counts."""
    from openmementos.shards import ShardSelection, ShardTask, input_shards

    selection = ShardSelection.parse(shard)
    universe, _ = input_shards(in_dir, selection)
    tasks = [ShardTask(index, name, in_dir / f"{name}.parquet") for index, name in enumerate(universe)]
    return tasks, selection, settings.shard_limits([task for task in tasks if selection.picks(task.index)])


def _run_heuristic(in_dir: Path, out_dir: Path, settings: SegmentSettings, workers: int, shard: str | None) -> None:
    from openmementos.schema import SegmentedTrace
    from openmementos.segment.stage import STAGE, HeuristicShards
    from openmementos.shards import Stage

    tasks, selection, limits = _tasks(in_dir, shard, settings)
    stage = Stage(
        name=STAGE,
        out_dir=out_dir,
        model=SegmentedTrace,
        process=HeuristicShards(settings, limits),
        options={**settings.options(), "scorer": "heuristic"},
        workers=workers,
        description="segment (heuristic)",
    )
    with resumable_on_interrupt():
        manifest = stage.run(tasks, selection)
    _report(manifest, out_dir)


def _run_llm(
    in_dir: Path,
    out_dir: Path,
    settings: SegmentSettings,
    shard: str | None,
    model: str,
    base_urls: list[str],
    api_key: str | None,
    window: int,
    second_window: int | None,
    concurrency: int,
    cache_dir: Path | None,
) -> None:
    from openmementos.llm import ChatCompleter, LLMEngine, LLMSettings, ResponseCache, relax_gc
    from openmementos.schema import SegmentedTrace
    from openmementos.segment.llm_scorer import LLMScorer, LLMShards
    from openmementos.segment.stage import STAGE
    from openmementos.shards import Stage

    llm = LLMSettings(base_urls=tuple(base_urls), api_key=api_key, concurrency=concurrency)
    llm.key()  # a hosted endpoint without a key fails here, before any work
    with ResponseCache.in_dir(cache_dir or out_dir / ".llm") as cache:  # made up front: a clear error if not writable
        cache_path = cache.path
    tasks, selection, limits = _tasks(in_dir, shard, settings)
    relax_gc()  # many requests in flight: see there

    async def open_engine() -> ChatCompleter:
        return LLMEngine(llm, cache=cache_path)

    with LLMShards(open_engine, model, window, second_window, settings, limits=limits) as process:
        stage = Stage(
            name=STAGE,
            out_dir=out_dir,
            model=SegmentedTrace,
            process=process,
            options={**settings.options(), **LLMScorer.options(model, window, second_window)},
            description=f"segment (llm {model})",
        )
        try:
            with resumable_on_interrupt():
                manifest = stage.run(tasks, selection)
        finally:
            typer.echo(process.tally.render())
    _report(manifest, out_dir)


def _report(manifest: Any, out_dir: Path) -> None:
    from openmementos.segment.explain import BlockStatistics

    reasons = ", ".join(f"{reason}: {count:,}" for reason, count in manifest.reasons().most_common())
    typer.echo(
        f"segmented {manifest.rows:,} traces, quarantined {manifest.quarantined:,}"
        + (f" ({reasons})" if reasons else "")
        + ("" if manifest.complete else " · some shards are not done yet (other --shard runs, or rerun)")
    )
    if statistics := BlockStatistics.of_directory(out_dir):
        typer.echo(statistics.render())
        typer.echo(f"why a trace got its blocks: openmementos segment {out_dir} --explain [TRACE_ID]")


def _explain(directory: Path, trace_id: str | None, settings: SegmentSettings) -> None:
    from rich.console import Console

    from openmementos.segment.explain import explain_folder

    explain_folder(directory, trace_id, settings, Console())
