"""`openmementos annotate`: write a memento for every block (SPEC 4.5-4.6)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from openmementos.commands import exit_interrupted

if TYPE_CHECKING:
    from openmementos.annotate.accounting import LiveStatus
    from openmementos.llm import ChatCompleter

EXTRACTIVE = "extractive"
BATCH_WINDOW = 20_000


def annotate(
    in_dir: Annotated[Path, typer.Argument(help="Output folder of `segment` (SegmentedTrace shards).")],
    out_dir: Annotated[Path, typer.Argument(help="Where AnnotatedTrace shards, quarantine and the summary go.")],
    model: Annotated[
        str | None,
        typer.Option(
            help="Annotator LLM (e.g. gpt-4.1-mini, or the model a vLLM server serves), or 'extractive' for "
            "the offline, deterministic annotator. Default: extractive when no endpoint or key is configured."
        ),
    ] = None,
    base_url: Annotated[
        list[str] | None,
        typer.Option(help="OpenAI-compatible endpoint; repeat for several replicas. Default: $OPENAI_BASE_URL."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(help="API key. Default: $OPENAI_API_KEY. Never written anywhere.", show_default=False)
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 64,
    rpm: Annotated[float | None, typer.Option(min=0.1, help="Requests per minute, client-side.")] = None,
    tpm: Annotated[float | None, typer.Option(min=1, help="Tokens per minute, client-side.")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds per HTTP request before retrying.")] = 300.0,
    threshold: Annotated[float, typer.Option(min=0, max=10, help="Judge score (0-10) a memento must reach.")] = 8.0,
    max_rounds: Annotated[int, typer.Option(min=1, help="Judge rounds per memento, refinements between.")] = 2,
    temperature: Annotated[
        float, typer.Option(min=0, help="Sampling temperature; 1 for models that take no other (o-series, gpt-5).")
    ] = 0.0,
    no_judge: Annotated[bool, typer.Option("--no-judge", help="Single pass: compress only, no judge.")] = False,
    batch: Annotated[
        bool, typer.Option("--batch", help="Use the OpenAI Batch API (half price, results within 24 h).")
    ] = False,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between batch status checks.")] = 30.0,
    shard: Annotated[str | None, typer.Option(help="Process only shards I mod N of the input: I/N.")] = None,
    limit: Annotated[int | None, typer.Option(min=0, help="Annotate only the first N traces (trial runs).")] = None,
    price_in: Annotated[float | None, typer.Option(help="US$ per 1M input tokens (overrides the table).")] = None,
    price_out: Annotated[float | None, typer.Option(help="US$ per 1M output tokens (overrides the table).")] = None,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Response cache folder (default OUT_DIR/.llm); share it across runs.")
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="Processes for the extractive annotator.")] = 1,
) -> None:
    """Write one memento per block: compress, judge, refine; or offline with --model extractive.

    Paid answers are cached as they arrive (OUT_DIR/.llm): a rerun after a crash or Ctrl-C pays nothing twice.

    Traces without a full set of usable mementos go to OUT_DIR/quarantine/ with the reason.

    Tokens, cost, judge pass rates and quarantine reasons: OUT_DIR/annotate_summary.json.

    Examples:

      openmementos annotate out/segmented out/annotated   (offline, extractive)

      openmementos annotate seg ann --model gpt-4.1-mini --limit 100   (trial run)

      openmementos annotate seg ann --model M --base-url http://gpu1:8000/v1 --base-url http://gpu2:8000/v1
    """
    from openmementos.shards import StageError

    model = _resolve_model(model, base_url, api_key)
    if (price_in is None) != (price_out is None):
        raise typer.BadParameter("give both --price-in and --price-out", param_hint="--price-in")
    try:
        if model == EXTRACTIVE:
            _run_extractive(in_dir, out_dir, shard, limit, workers)
        else:
            _run_llm(
                in_dir, out_dir, model, base_url or [], api_key, concurrency, rpm, tpm, timeout, threshold,
                max_rounds, temperature, not no_judge, batch, poll_interval, shard, limit, price_in, price_out,
                cache_dir,
            )  # fmt: skip
    except (StageError, ValueError) as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None


def _resolve_model(model: str | None, base_url: list[str] | None, api_key: str | None) -> str:
    if model:
        return model
    if base_url or api_key or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"):
        raise typer.BadParameter(
            "an endpoint or API key is configured: name the annotator LLM with --model, "
            "or pass --model extractive for the offline annotator",
            param_hint="--model",
        )
    return EXTRACTIVE


def _inputs(in_dir: Path, out_dir: Path, shard: str | None, limit: int | None) -> Any:
    """The shard tasks, the selection, per-shard limits and the number of traces left to annotate."""
    from openmementos.annotate.stage import count_traces, shard_limits
    from openmementos.shards import DONE_DIR, ShardSelection, ShardTask, input_shards

    selection = ShardSelection.parse(shard)
    universe, paths = input_shards(in_dir, selection)
    picked = [name for index, name in enumerate(universe) if selection.picks(index)]
    tasks = [ShardTask(index, name, in_dir / f"{name}.parquet") for index, name in enumerate(universe)]
    limits = shard_limits(paths, picked, limit)
    todo = [name for name in picked if not (out_dir / DONE_DIR / f"{name}.json").exists()]
    total = count_traces([in_dir / f"{name}.parquet" for name in todo], todo, limits)
    return tasks, selection, limits, total


def _run_extractive(in_dir: Path, out_dir: Path, shard: str | None, limit: int | None, workers: int) -> None:
    from openmementos.annotate.accounting import LiveStatus
    from openmementos.annotate.extractive import EXTRACTIVE_VERSION
    from openmementos.annotate.stage import ExtractiveShards, stage_options
    from openmementos.schema import AnnotatedTrace
    from openmementos.shards import Stage

    tasks, selection, limits, total = _inputs(in_dir, out_dir, shard, limit)
    live = LiveStatus(total)
    process = ExtractiveShards(out_dir, limits, live if workers == 1 else None)
    stage = Stage(
        name="annotate",
        out_dir=out_dir,
        model=AnnotatedTrace,
        process=process,
        options=stage_options(EXTRACTIVE, EXTRACTIVE_VERSION, limit, None),
        workers=workers,
        description="annotate (extractive)",
        status=live if workers == 1 else None,
    )
    _finish(stage, tasks, selection, live, threshold=0.0, max_rounds=1)


def _run_llm(
    in_dir: Path,
    out_dir: Path,
    model: str,
    base_urls: list[str],
    api_key: str | None,
    concurrency: int,
    rpm: float | None,
    tpm: float | None,
    timeout: float,
    threshold: float,
    max_rounds: int,
    temperature: float,
    judge: bool,
    batch: bool,
    poll_interval: float,
    shard: str | None,
    limit: int | None,
    price_in: float | None,
    price_out: float | None,
    cache_dir: Path | None,
) -> None:
    from openmementos.annotate.accounting import LiveStatus
    from openmementos.annotate.prompting import default_prompts
    from openmementos.annotate.recipe import RecipeSettings
    from openmementos.annotate.stage import LLMShards, stage_options
    from openmementos.llm import (
        BatchEngine,
        ConfigurationError,
        LLMEngine,
        LLMError,
        LLMSettings,
        PriceTable,
        ResponseCache,
        relax_gc,
    )
    from openmementos.schema import AnnotatedTrace
    from openmementos.shards import Stage

    settings = RecipeSettings(
        model=model, judge=judge, threshold=threshold, max_rounds=max_rounds, temperature=temperature
    )
    llm = LLMSettings(
        base_urls=tuple(base_urls), api_key=api_key, concurrency=concurrency, rpm=rpm, tpm=tpm, timeout_s=timeout
    )
    prices = PriceTable({model: (price_in, price_out)} if price_in is not None else None)
    with ResponseCache.in_dir(cache_dir or out_dir / ".llm") as cache:  # made up front: a clear error if not writable
        cache_path = cache.path

    async def open_engine() -> ChatCompleter:
        if batch:
            engine = BatchEngine(llm, cache=cache_path, prices=prices, poll_interval_s=poll_interval)
            return await engine.__aenter__()
        relax_gc()  # many requests in flight: see there
        return LLMEngine(llm, cache=cache_path, prices=prices)

    tasks, selection, limits, total = _inputs(in_dir, out_dir, shard, limit)
    live = LiveStatus(total)
    # Traces in flight: enough to keep `concurrency` requests busy despite in-order output; a batch
    # run puts up to BATCH_WINDOW traces of a shard into one batch per recipe step.
    window = BATCH_WINDOW if batch else concurrency * 4
    try:
        with LLMShards(out_dir, settings, open_engine, live, window=window, limits=limits) as process:
            stage = Stage(
                name="annotate",
                out_dir=out_dir,
                model=AnnotatedTrace,
                process=process,
                options=stage_options(model, default_prompts().version, limit, settings),
                description=f"annotate ({model}{', batch' if batch else ''})",
                status=live,
            )
            _finish(stage, tasks, selection, live, threshold=threshold, max_rounds=max_rounds if judge else 0)
    except ConfigurationError as error:
        typer.secho(f"error: {error}", fg="red", err=True)
        raise typer.Exit(1) from None
    except LLMError as error:
        typer.secho(
            f"error: {error}\nEvery answer received so far is cached; rerun the same command to resume.",
            fg="red",
            err=True,
        )
        raise typer.Exit(1) from None


def _finish(stage: Any, tasks: Any, selection: Any, live: LiveStatus, *, threshold: float, max_rounds: int) -> None:
    """Run the stage, then write and print the summary (also when interrupted)."""
    from openmementos.annotate.accounting import summary, write_summary
    from openmementos.shards import read_manifest

    interrupted = False
    try:
        stage.run(tasks, selection)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        if (stage.out_dir / "manifest.json").exists():
            data = summary(
                stage.out_dir,
                read_manifest(stage.out_dir),
                live,
                threshold=threshold,
                max_rounds=max_rounds,
                interrupted=interrupted,
            )
            path = write_summary(stage.out_dir, data)
            _print_summary(data, path, interrupted)
    if interrupted:
        exit_interrupted()


def _print_summary(data: dict[str, Any], path: Path, interrupted: bool) -> None:
    traces, usage = data["traces"], data["usage"]["total"]
    reasons = ", ".join(f"{reason}: {count}" for reason, count in traces["quarantine_reasons"].items())
    lines = [
        f"annotated {traces['annotated']:,} traces, quarantined {traces['quarantined']:,}"
        + (f" ({reasons})" if reasons else ""),
        f"LLM usage: {usage['requests']:,} requests, {usage['prompt_tokens']:,} prompt + "
        f"{usage['completion_tokens']:,} completion tokens, ${usage['cost_usd']:.4f}",
        f"memento/block tokens: {data['compression']['memento_to_block_ratio']:.3f}",
    ]
    if judge := data.get("judge"):
        rates = ", ".join(f"round {k}: {v:.0%}" for k, v in judge["pass_rate_after_round"].items())
        lines.append(f"judge pass rate (>= {judge['threshold']:g}) after {rates}")
    if engine := data["last_run"]["engine"]:
        lines.append(
            f"this run: {engine['sent']:,} requests sent, {engine['cache_hits']:,} answers from the cache, "
            f"${engine['cost_usd']:.4f} paid"
        )
    if not data["complete"]:
        hint = "" if interrupted else " (run the other --shard parts)"
        lines.append(f"{data['shards']['done']}/{data['shards']['total']} shards done{hint}")
    lines.append(f"summary: {path}")
    typer.echo("\n".join(lines))
