"""`annotate --estimate` and `estimate_annotate`: what a run will send and cost, before it sends anything.

The estimate is held against what a run then sends to the stand-in (whose model answers like a real one
in size, `support.annotate_script.sized_responder`), recipe by recipe, on the embedded sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.annotate_script import segmented_sample, sized_responder, write_segmented
from support.openai_standin import Faults, OpenAIStandIn
from typer.testing import CliRunner

from openmementos.annotate import AnnotateRequest, estimate_annotate
from openmementos.cli import app
from openmementos.llm.cost import CACHE_MIN_TOKENS, cacheable
from openmementos.llm.pricing import BATCH_DISCOUNT

MODEL = "gpt-4.1-mini"


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    traces = segmented_sample()
    return write_segmented(tmp_path_factory.mktemp("estimate") / "segmented", [traces[:15], traces[15:]])


@pytest.mark.parametrize("judge", ["off", "per-memento", "per-trace"])
def test_the_estimate_is_within_15_percent_of_what_the_run_sends(tmp_path: Path, sample: Path, judge: str) -> None:
    out = tmp_path / "annotated"
    estimate = estimate_annotate(AnnotateRequest(in_dir=sample, out_dir=out, model=MODEL, judge=judge))
    assert not out.exists()
    with OpenAIStandIn(Faults(prefix_cache_min_tokens=CACHE_MIN_TOKENS), responder=sized_responder) as server:
        args = [str(sample), str(out), "--model", MODEL, "--base-url", server.base_url, "--api-key", "k"]
        result = CliRunner().invoke(app, ["annotate", *args, "--judge", judge])
        assert result.exit_code == 0, result.output
    sent = json.loads((out / "annotate_report.json").read_text())["usage"]
    traces = len(segmented_sample())
    assert estimate.traces == estimate.counted == traces
    expected = estimate.total()
    assert expected.prompt_tokens == pytest.approx(sent["total"]["prompt_tokens"], rel=0.15)
    assert expected.requests == pytest.approx(sent["total"]["requests"], rel=0.15)
    # Completions are estimated at a real judge's size (EXPECTED_FIX); the scripted judge's fixes are shorter.
    assert expected.completion_tokens >= 0.8 * sent["total"]["completion_tokens"]
    if judge == "per-trace":
        assert expected.cached_prompt_tokens == pytest.approx(sent["total"]["cached_prompt_tokens"], rel=0.25)


def test_costs_standard_cached_and_batch(sample: Path, tmp_path: Path) -> None:
    per_trace = estimate_annotate(AnnotateRequest(in_dir=sample, out_dir=tmp_path, model=MODEL, judge="per-trace"))
    per_memento = estimate_annotate(AnnotateRequest(in_dir=sample, out_dir=tmp_path, model=MODEL))
    for estimate in (per_trace, per_memento):
        costs = estimate.costs(estimate.total())
        assert costs.batch == pytest.approx(costs.standard * BATCH_DISCOUNT) and 0 < costs.cached <= costs.standard
    assert per_trace.costs(per_trace.total()).cached < 0.75 * per_memento.costs(per_memento.total()).cached
    assert per_trace.trace_total().requests < per_memento.trace_total().requests / 3
    limited = estimate_annotate(AnnotateRequest(in_dir=sample, out_dir=tmp_path, model=MODEL, limit=4))
    assert limited.traces == 4 and limited.counted == 4
    stricter = estimate_annotate(AnnotateRequest(in_dir=sample, out_dir=tmp_path, model=MODEL, expected_pass_rate=0.9))
    assert stricter.per_trace["refine"].requests < per_memento.per_trace["refine"].requests
    assert cacheable(1023) == 0 and cacheable(1024) == 1024 and cacheable(1300) == 1280


def test_estimate_sends_nothing_creates_nothing_and_needs_no_key(
    tmp_path: Path, sample: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "never-made"
    args = ["annotate", str(sample), str(out), "--model", MODEL, "--judge", "per-trace", "--estimate"]
    with OpenAIStandIn(Faults()) as server:
        result = CliRunner().invoke(app, [*args, "--base-url", server.base_url])
        assert server.stats().routes == {}, "no request of any kind, not even the preflight"
    assert result.exit_code == 0, result.output
    assert not out.exists()
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})  # the hosted API, no key: still fine
    assert result.exit_code == 0, result.output
    assert not out.exists()
    output = result.output
    assert "nothing sent" in output and f"estimate for {len(segmented_sample())} traces with {MODEL}" in output
    for step in ("compress", "judge", "refine", "total"):
        assert any(line.startswith(step) for line in output.splitlines())
    assert "standard" in output and "cached prefixes" in output and "Batch API" in output
    assert "judge passes 28% of first drafts and 90% of refined ones" in output
    extractive = CliRunner().invoke(app, ["annotate", str(sample), str(out), "--estimate"])
    assert extractive.exit_code == 0 and "no LLM requests, $0" in extractive.output and not out.exists()
