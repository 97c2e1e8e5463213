"""`--judge per-trace` end to end, through the real openai client against the stand-in.

One judge call per round grades every memento of a trace in play (blocks and rubric sent once), one
refinement call rewrites the weak ones; every request of a trace opens with the same prefix (system
prompt, then the trace), so a provider with prefix caching (the stand-in's) bills it at the cached rate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.annotate_script import assert_each_once, make_trace, responder, write_segmented
from support.openai_standin import Faults, OpenAIStandIn
from typer.testing import CliRunner

from openmementos.annotate.prompting import default_prompts, trace_text
from openmementos.cli import app
from openmementos.llm import PriceTable
from openmementos.runtime.manifest import iter_stage, read_manifest
from openmementos.schema import AnnotatedTrace

MODEL = "gpt-4.1-mini"


def traces() -> list:
    return [
        make_trace(0),
        make_trace(1, problem_marker="FEWER"),
        make_trace(2, problem_marker="NEVER"),
        make_trace(3, block_markers={1: "WEAK"}),
        make_trace(4, block_markers={0: "STUBBORN"}),
        make_trace(5, block_markers={2: "MUTE"}),
        make_trace(6, block_markers={0: "LOOPING"}),
        make_trace(7, block_markers={2: "WILD"}),
        make_trace(8, n_blocks=6, block_markers={1: "WEAK", 4: "WEAK"}),
    ]


def annotate(in_dir: Path, out_dir: Path, base_url: str, *extra: str) -> str:
    args = ["annotate", str(in_dir), str(out_dir), "--model", MODEL, "--base-url", base_url, "--api-key", "k"]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def in_dir(tmp_path: Path) -> Path:
    return write_segmented(tmp_path / "segmented", [traces()[:4], traces()[4:]])


def test_per_trace_judge_one_call_per_round_cached_prefix_and_valid_output(tmp_path: Path, in_dir: Path) -> None:
    bodies: list[dict] = []

    def recording(body: dict) -> object:
        bodies.append(body)
        return responder(body)

    with OpenAIStandIn(Faults(prefix_cache_min_tokens=0), responder=recording) as server:
        output = annotate(in_dir, tmp_path / "annotated", server.base_url, "--judge", "per-trace")
    rows, quarantined = assert_each_once(tmp_path / "annotated", [t.id for t in traces()])
    assert quarantined == {"trace-0002": "mementos_incomplete", "trace-0005": "judge_unreadable"}
    by_id = {row.id: row for row in rows}
    assert all(review.judge == "per-trace" for row in rows for review in row.reviews)
    assert by_id["trace-0000"].usage.requests == 2, "one compress call, one judge call for all mementos"
    assert by_id["trace-0001"].usage.requests == 3, "a re-ask, then one judge call"
    weak = by_id["trace-0003"]
    assert weak.usage.requests == 4, "compress, judge all, refine the weak one, judge it again"
    assert [r.score for r in weak.reviews[1].rounds] == [5.0, 9.0] and weak.reviews[1].kept == 1
    assert weak.mementos[1].startswith("better ") and [len(r.rounds) for r in weak.reviews] == [1, 2, 1]
    stubborn = by_id["trace-0004"].reviews[0]
    assert [r.score for r in stubborn.rounds] == [6.0, 4.0] and stubborn.kept == 0
    assert by_id["trace-0006"].reviews[0].rounds[0].score == 9.0, "LOOPING: the verdict cut short is salvaged"
    assert by_id["trace-0006"].usage.requests == 3, "the verdicts lost to the cut are asked for once more"
    assert by_id["trace-0007"].reviews[2].rounds[0].score == 8.0, "WILD: clamped like a single verdict"
    two_weak = by_id["trace-0008"]
    assert two_weak.usage.requests == 4, "both weak mementos in one refinement call, then one judge call"
    assert [len(r.rounds) for r in two_weak.reviews] == [1, 2, 1, 1, 2, 1]
    for row in rows:
        assert sum(r.prompt_tokens for review in row.reviews for r in review.rounds) > 0

    # Every request of a trace opens with the same prefix: the system prompt, then the trace.
    for trace in traces():
        shown = trace_text(trace.problem, trace.block_texts())
        mine = [b for b in bodies if shown in b["messages"][1]["content"]]
        assert mine and all(b["messages"][0]["content"] == default_prompts().compress for b in mine)
        assert all(b["messages"][1]["content"].startswith(shown) for b in mine)

    # Fixes are asked only where a refinement uses them: none at all in the last round (the grammar says so).
    def fixes_schema(body: dict) -> dict:
        verdict = body["response_format"]["json_schema"]["schema"]["properties"]["verdicts"]["items"]
        return verdict["properties"]["fixes"]

    graded = [b for b in bodies if "Request: grade the mementos" in b["messages"][1]["content"]]
    final = [b for b in graded if "These grades are final" in b["messages"][-1]["content"]]
    assert final and all(fixes_schema(b)["maxItems"] == 0 for b in final)
    assert all(fixes_schema(b) == {**fixes_schema(b), "minItems": 0, "maxItems": 5} for b in graded if b not in final)

    # Provenance: the manifest, the report and every review name the judge.
    assert read_manifest(tmp_path / "annotated").options["judge"] == "per-trace"
    report = json.loads((tmp_path / "annotated" / "annotate_report.json").read_text())
    assert report["judge"]["mode"] == "per-trace" and "judge (per-trace)" in output

    # Cached prompt tokens: read from usage, kept per row, priced at the cached rate.
    total = report["usage"]["total"]
    assert 0 < total["cached_prompt_tokens"] < total["prompt_tokens"]
    expected = PriceTable().cost(
        MODEL, total["prompt_tokens"], total["completion_tokens"], cached_prompt_tokens=total["cached_prompt_tokens"]
    )
    assert total["cost_usd"] == pytest.approx(expected, rel=1e-6)
    assert total["cost_usd"] < PriceTable().cost(MODEL, total["prompt_tokens"], total["completion_tokens"])
    assert all(row.usage.cached_prompt_tokens > 0 for row in rows if row.usage.requests > 1)
    assert f"{total['cached_prompt_tokens']:,} cached" in output

    result = CliRunner().invoke(app, ["validate", str(tmp_path / "annotated"), str(tmp_path / "validated")])
    assert result.exit_code == 0, result.output
    kept = sorted(row.id for row in iter_stage(tmp_path / "validated", AnnotatedTrace))
    assert kept == sorted(set(by_id) - {"trace-0004"}), "only STUBBORN's memento, kept at 6 < 8, is filtered"


def test_per_trace_sends_fewer_requests_and_tokens_than_per_memento(tmp_path: Path, in_dir: Path) -> None:
    with OpenAIStandIn(Faults(), responder=responder) as server:
        annotate(in_dir, tmp_path / "per-memento", server.base_url)
        annotate(in_dir, tmp_path / "per-trace", server.base_url, "--judge", "per-trace")
    reports = {
        mode: json.loads((tmp_path / mode / "annotate_report.json").read_text())
        for mode in ("per-memento", "per-trace")
    }
    memento, trace = (reports[mode]["usage"]["total"] for mode in ("per-memento", "per-trace"))
    assert trace["requests"] < memento["requests"]
    rates = {mode: reports[mode]["judge"]["pass_rate_after_round"] for mode in reports}
    assert rates["per-trace"] == rates["per-memento"], "the same verdicts, whichever way they are asked"


def test_a_pipeline_file_may_still_say_judge_true_or_false(tmp_path: Path) -> None:
    from openmementos.annotate.request import RecipeSettings

    assert RecipeSettings(model="m", judge=True).judge == "per-memento"
    assert RecipeSettings(model="m", judge=False).judge == "off"
    with pytest.raises(ValueError, match="per-trace"):
        RecipeSettings(model="m", judge="sometimes")


def test_the_live_bar_shows_the_cached_share_of_the_prompt() -> None:
    from openmementos.annotate.accounting import LiveStatus
    from openmementos.llm import EngineStats

    stats = EngineStats(prompt_tokens=10_000, cached_prompt_tokens=6_200, completion_tokens=500, cost_usd=0.0021)
    line = LiveStatus(10, stats)()
    assert "$0.0021" in line and "62% of prompt cached" in line
    assert "cached" not in LiveStatus(10, EngineStats(prompt_tokens=5))()
