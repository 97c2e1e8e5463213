"""stats: the per-trace frame, figures per domain, the simulated peak-KV ratio (kvsim), plots, exports and the CLI.

The statistics were computed by hand-written accumulators before they became polars aggregations; a
frozen copy of that computation (`old_dataset_stats`, below) is the oracle the figures must equal, on
generated figures, generated traces and the demo pipeline's output.
"""

from __future__ import annotations

import json
import math
import statistics
from array import array
from collections import Counter, defaultdict
from collections.abc import Sequence
from statistics import fmean
from typing import Any

import polars as pl
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support.annotated_traces import make_trace, write_stage
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.format import SUMMARY_END, render_response
from openmementos.kvsim import simulate_kv
from openmementos.schema import AnnotatedTrace, Usage
from openmementos.stats import (
    FRAME_SCHEMA,
    PAPER,
    FigureFrame,
    TraceFigures,
    collect,
    comparison_rows,
    dataset_stats,
    figures_from_texts,
    figures_from_traces,
    iter_traces,
    write_plots,
)
from openmementos.stats.figures import RecordedTrace
from openmementos.tokens import count_tokens


def figures(domain: str, blocks: list[int], mementos: list[int], source: str = "s") -> TraceFigures:
    return TraceFigures(domain, source, 50, tuple(blocks), tuple(mementos), 10)


def stats_of(items: Sequence[TraceFigures]):
    return dataset_stats(FigureFrame().extend(items).frame())


# --------------------------------------------------------------------------- the oracle: the old accumulators


def _old_quantile(ordered: Sequence[float], q: float) -> float:
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _old_summary(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    quantiles = {"median": 0.5, "p10": 0.1, "p90": 0.9}
    return {
        "count": len(ordered),
        "mean": round(fmean(ordered), 4),
        **{name: round(_old_quantile(ordered, q), 4) for name, q in quantiles.items()},
        "min": round(ordered[0], 4),
        "max": round(ordered[-1], 4),
    }


def old_dataset_stats(items: Sequence[TraceFigures], made_by: Sequence[AnnotatedTrace] = ()) -> dict[str, Any]:
    """The statistics as the accumulators of the first `stats.py` computed them (kept as a test oracle)."""
    typecodes = {"blocks": "i", "block_tokens": "i", "memento_tokens": "i", "ratios": "f", "kv": "f"}
    typecodes |= {"peaks": "q", "peaks_without": "q"}
    samples: dict[str, dict[str, array]] = defaultdict(lambda: {name: array(t) for name, t in typecodes.items()})
    sources: dict[str, Counter[str]] = defaultdict(Counter)
    scores = array("f")
    for item in items:
        kv = item.kv()
        for name in ("all", item.domain):
            mine = samples[name]
            mine["blocks"].append(len(item.block_tokens))
            mine["block_tokens"].extend(item.block_tokens)
            mine["memento_tokens"].extend(item.memento_tokens)
            mine["ratios"].extend(item.ratios())
            mine["kv"].append(kv.ratio)
            mine["peaks"].append(kv.peak_with_eviction)
            mine["peaks_without"].append(kv.peak_without_eviction)
        sources[item.domain][item.source] += 1
        scores.extend(item.judge_scores)
    counts = {d: len(s["blocks"]) for d, s in samples.items() if d != "all"}
    order = sorted(counts, key=lambda d: (-counts[d], d))

    def domain(s: dict[str, array]) -> dict[str, Any]:
        blocks, mementos = sum(s["block_tokens"]), sum(s["memento_tokens"])
        return {
            "traces": len(s["blocks"]),
            "blocks": len(s["block_tokens"]),
            "blocks_per_trace": _old_summary(s["blocks"]),
            "block_tokens": _old_summary(s["block_tokens"]),
            "memento_tokens": _old_summary(s["memento_tokens"]),
            "compression_median": round(_old_quantile(sorted(s["ratios"]), 0.5), 4) if s["ratios"] else 0.0,
            "trace_compression": round(blocks / mementos, 3) if mementos else 0.0,
            "kv_ratio": _old_summary(s["kv"]),
            "peak_kv_tokens_mean": round(fmean(s["peaks"]), 1),
            "peak_kv_tokens_without_eviction_mean": round(fmean(s["peaks_without"]), 1),
        }

    provenance = None
    if made_by:
        made: dict[str, Counter[str]] = defaultdict(Counter)
        rounds: Counter[int] = Counter()
        usage = [0, 0, 0, 0, 0.0]
        counted = ("requests", "prompt_tokens", "cached_prompt_tokens", "completion_tokens")
        for trace in made_by:
            for name in ("annotator_model", "prompt_version", "scorer", "tokenizer"):
                made[f"{name}s"][getattr(trace, name)] += 1
            for i, name in enumerate(counted):
                usage[i] += getattr(trace.usage, name)
            usage[4] += trace.usage.cost_usd
            rounds.update(len(review.rounds) for review in trace.reviews if review.rounds)
        provenance = {
            **{name: dict(c.most_common()) for name, c in made.items()},
            "usage": dict(zip(counted, usage[:4], strict=True)) | {"cost_usd": round(usage[4], 6)},
            "judge_rounds": dict(sorted(rounds.items())),
        }
    judge = _old_summary(scores)
    return {
        "traces": len(items),
        "domains": {name: domain(samples[name]) for name in [*order, "all"]},
        "sources": {d: dict(sorted(sources[d].items(), key=lambda kv: (-kv[1], kv[0]))) for d in order},
        "judge": {"judged_mementos": judge["count"], "final_score": judge} if judge else None,
        "provenance": provenance,
        "paper": PAPER.model_dump(),
    }


def in_order(value: Any) -> Any:
    """Dicts as lists of items, so that comparing two results compares the order of their keys too."""
    if isinstance(value, dict):
        return [(key, in_order(item)) for key, item in value.items()]
    return value


def assert_same_as_before(result, items: Sequence[TraceFigures], made_by: Sequence[AnnotatedTrace] = ()) -> None:
    assert in_order(result.model_dump()) == in_order(old_dataset_stats(items, made_by))


# --------------------------------------------------------------------------- the figures equal the old ones

block = st.integers(0, 4000)
trace_figures = st.builds(
    lambda domain, source, prompt, pairs, answer, scores: TraceFigures(
        domain, source, prompt, tuple(b for b, _ in pairs), tuple(m for _, m in pairs), answer, tuple(scores)
    ),
    st.sampled_from(["math", "code", "science", "chemistry"]),
    st.sampled_from(["a", "b", "c"]),
    st.integers(0, 300),
    st.lists(st.tuples(block, st.integers(0, 600)), min_size=1, max_size=12),
    st.integers(0, 200),
    st.lists(st.floats(0, 10, allow_nan=False, width=32), max_size=4),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(trace_figures, min_size=1, max_size=40))
@example([TraceFigures("math", "a", 0, (20_000,), (1,), 0)])  # 1/20000 rounds to 0.0001, its float32 to 0.0
def test_every_figure_equals_the_old_accumulators(items):
    assert_same_as_before(stats_of(items), items)


def test_figures_of_generated_traces_with_provenance_equal_the_old_ones():
    traces = [make_trace(n, n_blocks=1 + n % 9, judged=n % 3 == 0) for n in range(120)]
    traces += [t.model_copy(update={"annotator_model": "other", "usage": Usage()}) for t in traces[:7]]
    frame = FigureFrame()
    for start in range(0, len(traces), 50):
        frame.add_traces(traces[start : start + 50])
    assert_same_as_before(dataset_stats(frame.frame()), figures_from_traces(traces), traces)


def test_the_demo_figures_equal_the_old_ones(demo_run):
    assert demo_run.full.exit_code == 0, demo_run.full.output
    validated = demo_run.workdir / "validate"
    traces = list(iter_traces(validated))
    result = dataset_stats(collect(validated, progress=False))
    assert_same_as_before(result, figures_from_traces(traces), traces)
    published = dataset_stats(collect(demo_run.published, progress=False))
    assert_same_as_before(published, figures_from_traces(list(iter_traces(demo_run.published))))
    assert published.traces == result.traces >= 20


# --------------------------------------------------------------------------- the figures themselves


def test_summary_per_domain_and_overall():
    result = stats_of(
        [
            figures("math", [1000, 1000, 1000], [100, 200, 150]),
            figures("math", [500, 1500], [50, 300]),
            figures("code", [800], [80], source="t"),
        ]
    )
    assert list(result.domains) == ["math", "code", "all"]
    math_stats = result.domains["math"]
    assert (math_stats.traces, math_stats.blocks) == (2, 5)
    assert math_stats.blocks_per_trace.median == 2.5
    assert math_stats.block_tokens.mean == 1000
    assert math_stats.compression_median == pytest.approx(statistics.median([0.1, 0.2, 0.15, 0.1, 0.2]), abs=1e-6)
    assert math_stats.trace_compression == pytest.approx(5000 / 800, abs=1e-3)
    kv = [simulate_kv(50, b, m, 10).ratio for b, m in [([1000] * 3, [100, 200, 150]), ([500, 1500], [50, 300])]]
    assert math_stats.kv_ratio.mean == pytest.approx(statistics.fmean(kv), abs=1e-3)
    assert result.domains["all"].traces == 3
    assert result.sources == {"math": {"s": 2}, "code": {"t": 1}}
    assert result.judge is None and result.provenance is None
    with pytest.raises(ValueError, match="no traces"):
        dataset_stats(FigureFrame().frame())


def test_sums_do_not_overflow_32_bits():
    huge = [figures("math", [2_000_000_000, 2_000_000_000], [1, 1]) for _ in range(3)]
    result = stats_of(huge)
    assert result.domains["all"].trace_compression == 2e9
    assert result.domains["all"].block_tokens.mean == 2e9


def test_kv_ratio_is_kvsim_of_the_recorded_token_counts():
    trace = make_trace(4, n_blocks=5)
    (got,) = figures_from_traces([trace])
    assert got.block_tokens == tuple(trace.block_tokens) and got.memento_tokens == tuple(trace.memento_tokens)
    ratio = got.kv().ratio
    assert ratio == simulate_kv(got.prompt_tokens, trace.block_tokens, trace.memento_tokens, got.answer_tokens).ratio
    assert 2 < ratio < 5  # five equal blocks, mementos ~8% of a block
    assert figures_from_traces([RecordedTrace.of(trace)]) == [got]  # the columns alone give the same figures
    trace = trace.model_copy(update={"block_tokens": [1] * 5})  # recorded counts are used as they are ...
    assert figures_from_traces([trace])[0].block_tokens == (1,) * 5
    (recounted,) = figures_from_traces([trace], "o200k_base")  # ... unless another tokenizer is asked for
    assert recounted.block_tokens == tuple(count_tokens(trace.block_texts(), "o200k_base"))
    with pytest.raises(ValueError, match="texts are needed for o200k_base"):
        figures_from_traces([RecordedTrace.of(trace)], "o200k_base")
    alone = figures_from_texts(
        domain=trace.domain,
        source=trace.source,
        problem=trace.problem,
        blocks=trace.block_texts(),
        mementos=trace.mementos,
        answer=trace.answer,
        tokenizer="o200k_base",
    )
    assert alone == TraceFigures(**{**recounted.__dict__, "id": None})  # the helper of the KV benchmark agrees
    # kvsim's answer_tokens is everything after the last <|summary_end|> of the rendered response.
    rendered = render_response(trace.block_texts(), trace.mementos, trace.answer)
    assert alone.answer_tokens == count_tokens([rendered.rsplit(SUMMARY_END, 1)[1]], "o200k_base")[0]


def test_the_frame_has_one_row_per_trace(tmp_path):
    traces = [make_trace(n, judged=n % 2 == 1) for n in range(9)]
    write_stage(tmp_path / "annotate", traces, shards=1)
    frame = collect(tmp_path / "annotate", progress=False)
    assert frame.schema == FRAME_SCHEMA and frame.height == 9
    row = frame.row(1, named=True)
    trace = traces[1]
    assert (row["id"], row["domain"], row["blocks"]) == (trace.id, trace.domain, len(trace.blocks))
    assert row["block_tokens"] == trace.block_tokens and row["memento_tokens"] == trace.memento_tokens
    assert row["judge_scores"] == [9.0] * len(trace.mementos) and row["judge_rounds"] == [1] * len(trace.mementos)
    assert (row["annotator_model"], row["usage_requests"], row["usage_cost_usd"]) == ("extractive", 1, 0.001)
    kv = figures_from_traces([trace])[0].kv()
    assert row["peak_kv_tokens"] == kv.peak_with_eviction
    assert row["peak_kv_tokens_without_eviction"] == kv.peak_without_eviction
    # the columns read alone give the frame that whole traces give
    whole = FigureFrame()
    whole.add_traces(list(iter_traces(tmp_path / "annotate")))
    assert frame.equals(whole.frame())


def test_collect_a_stage_folder_with_provenance_plots_and_table(tmp_path):
    write_stage(tmp_path / "annotate", [make_trace(n, judged=n % 2 == 1) for n in range(9)])
    frame = collect(tmp_path / "annotate", progress=False)
    result = dataset_stats(frame)
    assert result.traces == 9 and set(result.domains) == {"math", "code", "science", "all"}
    assert result.provenance.annotator_models == {"extractive": 9}
    assert result.provenance.usage.requests == 9
    assert result.judge.judged_mementos == sum(len(make_trace(n).mementos) for n in range(1, 9, 2))
    assert result.provenance.judge_rounds == {1: result.judge.judged_mementos}

    paths = write_plots(frame, tmp_path / "plots")
    assert [p.name for p in paths] == ["compression.png", "kv_ratio.png", "blocks.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)
    first = [p.read_bytes() for p in paths]
    write_plots(frame, tmp_path / "plots")
    assert [p.read_bytes() for p in paths] == first  # byte-stable: republishing changes nothing

    rows = dict(comparison_rows(result))
    assert rows["peak-KV ratio (mean)"]["all"] == f"{result.domains['all'].kv_ratio.mean:.2f}x ({PAPER.kv_ratio}x)"
    assert rows["memento/block (median)"]["science"].endswith("(0.23)")
    assert rows["traces"]["all"] == "9"


def test_cli_prints_kv_ratio_next_to_the_paper_and_json(tmp_path):
    write_stage(tmp_path / "annotate", [make_trace(n) for n in range(6)])
    runner = CliRunner()
    result = runner.invoke(app, ["stats", str(tmp_path / "annotate"), "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert "peak-KV ratio" in result.output and "(2.5x)" in result.output
    assert "the paper reports ~2.5x" in result.output
    assert (tmp_path / "plots" / "kv_ratio.png").exists()

    as_json = runner.invoke(app, ["stats", str(tmp_path / "annotate"), "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["traces"] == 6 and data["paper"]["kv_ratio"] == 2.5
    assert data["domains"]["all"]["kv_ratio"]["mean"] > 1

    missing = runner.invoke(app, ["stats", str(tmp_path)], env={"COLUMNS": "300"})
    assert missing.exit_code != 0 and "neither a stage folder" in missing.output


def test_cli_writes_the_per_trace_frame_as_csv_and_parquet(tmp_path):
    traces = [make_trace(n, n_blocks=2 + n % 3, judged=n % 2 == 0) for n in range(7)]
    write_stage(tmp_path / "annotate", traces)
    out = tmp_path / "out"
    args = ["stats", str(tmp_path / "annotate"), "--csv", str(out / "t.csv"), "--parquet", str(out / "t.parquet")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"per-trace figures: {out / 't.csv'}" in result.output
    frame = collect(tmp_path / "annotate", progress=False)
    assert pl.read_parquet(out / "t.parquet").equals(frame)  # lists and dtypes kept
    table = pl.read_csv(out / "t.csv")
    assert table.columns == frame.columns and table.height == 7
    assert sorted(path.name for path in out.iterdir()) == ["t.csv", "t.parquet"]  # no partial file left
    by_id = {row["id"]: row for row in table.iter_rows(named=True)}
    for trace in traces:
        row = by_id[trace.id]
        assert json.loads(row["block_tokens"]) == trace.block_tokens  # list columns as JSON arrays
        assert json.loads(row["memento_tokens"]) == trace.memento_tokens
        assert len(json.loads(row["judge_scores"])) == (len(trace.mementos) if trace.reviews else 0)
    blocked = CliRunner().invoke(app, ["stats", str(tmp_path / "annotate"), "--csv", str(out)], env={"COLUMNS": "300"})
    assert blocked.exit_code != 0 and f"cannot write {out}" in blocked.output  # a folder is in the way
    assert not list(tmp_path.glob(".*.partial"))
    # JSON mode writes them too, and prints nothing else
    args = ["stats", str(tmp_path / "annotate"), "--json", "--parquet", str(tmp_path / "j.pq")]
    as_json = CliRunner().invoke(app, args)
    assert json.loads(as_json.output)["traces"] == 7 and (tmp_path / "j.pq").exists()


def test_a_published_folder_gives_the_same_figures_as_its_validated_traces(tmp_path):
    from openmementos.publish import PublishRequest, run_publish
    from openmementos.validate import ValidateRequest, run_validate

    write_stage(tmp_path / "annotate", [make_trace(n, n_blocks=2 + n % 4) for n in range(8)])
    run_validate(ValidateRequest(in_dir=tmp_path / "annotate", out_dir=tmp_path / "validate"))
    run_publish(PublishRequest(in_dir=tmp_path / "validate", to=tmp_path / "published"))
    validated = dataset_stats(collect(tmp_path / "validate", progress=False))
    published_frame = collect(tmp_path / "published", progress=False)
    published = dataset_stats(published_frame)
    assert published.provenance is None and validated.provenance is not None
    assert published.domains == validated.domains  # recounted from the rows == as recorded by the stages
    assert published_frame["id"].null_count() == 8  # published rows carry no id
