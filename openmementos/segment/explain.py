"""`openmementos segment --explain`: why one trace got its blocks, and where to find trace ids.

For a trace: its blocks with their cut scores, sizes and rules, and the best J at each block count
around the chosen one (K - 3 … K + 3), so the trade-off between more cuts and balance is visible. For a
folder without a trace id: a few ids with their domain and length.
"""

from __future__ import annotations

import statistics
from pathlib import Path

import pyarrow.parquet as pq
from rich.console import Console
from rich.table import Table

from openmementos.runtime.manifest import Manifest, data_files, read_manifest
from openmementos.schema import SegmentedTrace, SourceTrace
from openmementos.segment.partition import Objective, best_per_block_count, evaluate
from openmementos.segment.request import STAGE, SegmentSettings
from openmementos.segment.scorers import HeuristicScorer
from openmementos.segment.stage import segment_trace
from openmementos.tokens import count_tokens

PREVIEW_CHARS = 70
NEARBY = 3  # block counts shown on each side of the chosen one
LISTED_PER_DOMAIN = 4


def find_trace(directory: Path, trace_id: str) -> dict[str, object] | None:
    """The row with this id in a stage's output shards (reads only the id column until it is found)."""
    for path in data_files(directory):
        ids = pq.read_table(path, columns=["id"]).column("id").to_pylist()
        if trace_id in ids:
            table = pq.read_table(path).slice(ids.index(trace_id), 1)
            return table.to_pylist()[0]
    return None


def settings_of(manifest: Manifest, given: SegmentSettings) -> SegmentSettings:
    """The settings a segment folder was made with (`given` fills what the manifest lacks).

    Folders made before the objective was an option used the per-cut one.
    """
    options = manifest.options
    return given.model_copy(
        update={
            "lam": float(options.get("lam", given.lam)),
            "min_block_tokens": int(options.get("min_block_tokens", given.min_block_tokens)),
            "max_block_tokens": options.get("max_block_tokens", given.max_block_tokens),
            "objective": Objective(options.get("objective", Objective.per_cut)),
        }
    )


def explain_folder(directory: Path, trace_id: str | None, settings: SegmentSettings, console: Console) -> None:
    """Explain one trace of a `segment` folder, or segment it on the fly from a `download` folder
    (heuristic scorer, `settings`). Without an id, list a few. ValueError when the id is not there."""
    manifest = read_manifest(directory)
    if trace_id is None:
        list_traces(directory, manifest, settings, console)
        return
    row = find_trace(directory, trace_id)
    if row is None:
        list_traces(directory, manifest, settings, console)
        raise ValueError(f"no trace with id {trace_id!r} in {directory} (some ids are listed above)")
    if manifest.stage == STAGE:
        explain(SegmentedTrace.model_validate(row), settings_of(manifest, settings), console)
    else:
        fields = {name: value for name, value in row.items() if name in SourceTrace.model_fields}
        explain(segment_trace(SourceTrace.model_validate(fields), HeuristicScorer(), settings), settings, console)


def list_traces(directory: Path, manifest: Manifest, settings: SegmentSettings, console: Console) -> None:
    """A few trace ids of a stage folder (the first ones of each domain) with their domain and length."""
    segmented = manifest.stage == STAGE
    columns = ["id", "domain", "sentence_tokens", "blocks"] if segmented else ["id", "domain", "reasoning"]
    picked: list[dict[str, object]] = []
    per_domain: dict[str, int] = {}
    for path in data_files(directory):
        for row in pq.read_table(path, columns=columns).to_pylist():
            domain = str(row["domain"])
            if per_domain.get(domain, 0) < LISTED_PER_DOMAIN:
                per_domain[domain] = per_domain.get(domain, 0) + 1
                picked.append(row)
        if len(per_domain) >= 3 and all(count >= LISTED_PER_DOMAIN for count in per_domain.values()):
            break
    console.print(f"some traces in {directory} (`{manifest.stage}` output):", soft_wrap=True)
    table = Table()
    for column, justify in (("id", "left"), ("domain", "left"), ("tokens", "right"), ("blocks", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    if not segmented:  # lengths of the reasoning, counted now
        tokens = count_tokens([str(row["reasoning"]) for row in picked], settings.tokenizer)
    for number, row in enumerate(picked):
        if segmented:
            table.add_row(
                str(row["id"]), str(row["domain"]), f"{sum(row['sentence_tokens']):,}", str(len(row["blocks"]))
            )  # type: ignore[arg-type]
        else:
            table.add_row(str(row["id"]), str(row["domain"]), f"{tokens[number]:,}", "—")
    console.print(table)
    console.print(f"explain one: openmementos segment {directory} --explain TRACE_ID", soft_wrap=True)


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= PREVIEW_CHARS else flat[: PREVIEW_CHARS - 1] + "…"


def explain(trace: SegmentedTrace, settings: SegmentSettings, console: Console) -> None:
    """Print why a segmented trace has its blocks: the trade-off around its block count, then each block."""
    sentences = trace.sentences()
    scores = trace.boundary_scores
    reasons = HeuristicScorer().score(sentences).reasons if trace.scorer == "heuristic" else None
    blocks = [(first, last) for first, last in trace.blocks]
    objective, lam = settings.objective, settings.lam
    parts = evaluate(scores, trace.sentence_tokens, blocks, lam, objective)
    console.print(
        f"[bold]{trace.id}[/]  {trace.domain} · {len(sentences)} sentences · {sum(trace.sentence_tokens):,} "
        f"{trace.tokenizer} tokens · scorer {trace.scorer}"
    )
    console.print(
        f"{len(blocks)} blocks · cut term {parts.mean_cut:.3f} · CV of block sizes {parts.cv:.3f} · "
        f"J {parts.objective:.4f} ({objective.value} objective: {_formula(objective)}, λ = {lam:g})"
    )
    console.print(_tradeoff(trace, settings, len(blocks)))
    table = Table(show_lines=False, title="the blocks")
    for column, justify in (("block", "right"), ("sentences", "right"), ("tokens", "right"), ("cut", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    if reasons:
        table.add_column("rule")
    table.add_column("best uncut inside", justify="right")
    table.add_column("starts with")
    for number, (first, last) in enumerate(blocks):
        cut = "—" if number == 0 else f"{scores[first - 1]:g}"
        inside = [(scores[i], i) for i in range(first, last)]
        best_inside = max(inside, key=lambda pair: (pair[0], -pair[1]), default=None)
        uncut = "—" if best_inside is None else f"{best_inside[0]:g} after s{best_inside[1]}"
        row = [str(number), f"{first}–{last}", f"{trace.block_tokens[number]:,}", cut]
        if reasons:
            row.append("" if number == 0 else reasons[first - 1])
        row += [uncut, _preview(sentences[first])]
        table.add_row(*row)
    console.print(table)
    console.print(
        "cut: the score of the boundary before the block (0 mid-derivation … 3 new approach); "
        "best uncut inside: the strongest boundary the optimum left inside the block."
    )


def _formula(objective: Objective) -> str:
    divisor = "K" if objective is Objective.published else "(K - 1)"
    return f"sum of cut scores / {divisor} - λ·CV"


def _tradeoff(trace: SegmentedTrace, settings: SegmentSettings, chosen: int) -> Table:
    """The best J with K blocks for K around the chosen count (exact, under the trace's settings)."""
    counts = range(max(1, chosen - NEARBY), chosen + NEARBY + 1)
    best = best_per_block_count(
        trace.sentence_tokens,
        trace.boundary_scores,
        counts,
        settings.lam,
        settings.min_block_tokens,
        settings.max_block_tokens,
        settings.objective,
    )
    table = Table(title="best J with K blocks", caption="one more block pays only for a cut above the cut term")
    for column in ("K", "best J", "cut term", "CV", "mean block tokens", ""):
        table.add_column(column, justify="right")
    top = max((p.objective for p in best.values() if p is not None), default=None)
    for k, partition in best.items():
        mark = "◀ chosen" if k == chosen else ""
        if partition is None:
            table.add_row(str(k), "—", "—", "—", "—", mark or "no feasible partition")
            continue
        value = f"{partition.objective:.4f}" + (" (best)" if partition.objective == top else "")
        mean_tokens = statistics.fmean(partition.block_tokens)
        table.add_row(str(k), value, f"{partition.mean_cut:.3f}", f"{partition.cv:.3f}", f"{mean_tokens:,.0f}", mark)
    return table
