"""`segment --scorer llm --estimate`: what scoring will send and cost, checked against what a run then sends."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from support.annotate_script import billed
from support.openai_standin import OpenAIStandIn, Reply
from support.trace_builders import write_stage_folder
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.resources import sample_traces
from openmementos.schema import SourceTrace
from openmementos.segment import estimate_segment
from openmementos.segment.request import SegmentRequest

MODEL = "gpt-4.1-mini"
_COUNT = re.compile(r"Score the (\d+) marked boundaries")
WIDE = {"COLUMNS": "250"}


def scorer(body: dict[str, Any]) -> Reply:
    """A well-behaved scoring model with real token counts (cl100k, 4 tokens per message, as OpenAI bills)."""
    count = int(_COUNT.search(body["messages"][-1]["content"]).group(1))  # type: ignore[union-attr]
    return billed(body, json.dumps({"scores": [1] * count}))


@pytest.fixture(scope="module")
def download(tmp_path_factory: pytest.TempPathFactory) -> Path:
    traces = list(sample_traces())[:12]
    folder = tmp_path_factory.mktemp("estimate") / "download"
    write_stage_folder(folder, "download", SourceTrace, [traces[:6], traces[6:]])
    return folder


def test_the_estimate_matches_what_the_scorer_then_sends(download: Path, tmp_path: Path) -> None:
    out = tmp_path / "segmented"
    request = SegmentRequest(in_dir=download, out_dir=out, scorer="llm", model=MODEL, second_window=11)
    estimate = estimate_segment(request)
    assert not out.exists() and estimate.traces == estimate.counted == 12
    with OpenAIStandIn(responder=scorer) as server:
        args = [str(download), str(out), "--scorer", "llm", "--model", MODEL, "--second-window", "11"]
        result = CliRunner().invoke(app, ["segment", *args, "--base-url", server.base_url, "--api-key", "k"])
        assert result.exit_code == 0, result.output
    scoring = re.search(r"\(([\d,]+) requests sent\), ([\d,]+) prompt \+ ([\d,]+) completion", result.output)
    assert scoring is not None, result.output
    requests, prompt, completion = (int(group.replace(",", "")) for group in scoring.groups())
    expected = estimate.total()
    assert expected.requests == requests  # every window of both passes, none re-asked
    assert expected.prompt_tokens == pytest.approx(prompt, rel=0.05)
    assert expected.completion_tokens == pytest.approx(completion, rel=0.05)
    assert estimate.costs(expected).standard > 0


def test_cli_estimate_sends_nothing_and_the_heuristic_costs_nothing(download: Path, tmp_path: Path) -> None:
    with OpenAIStandIn(responder=scorer) as server:
        args = [str(download), str(tmp_path / "out"), "--scorer", "llm", "--model", MODEL, "--estimate"]
        result = CliRunner().invoke(app, ["segment", *args, "--base-url", server.base_url], env=WIDE)
        assert result.exit_code == 0, result.output
        assert server.stats().chat_requests == 0
    assert f"estimate for 12 traces with {MODEL}, LLM boundary scores, windows of 16" in result.output
    assert "whole input: " in result.output and not (tmp_path / "out").exists()
    plain = CliRunner().invoke(app, ["segment", str(download), str(tmp_path / "out"), "--estimate"], env=WIDE)
    assert plain.exit_code == 0 and "12 traces with the heuristic scorer: no LLM requests, $0" in plain.output


def test_run_check_prices_scoring_and_annotation_once_the_download_exists(download: Path, tmp_path: Path) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(
        textwrap.dedent(
            f"""
            name: x
            workdir: w
            stages:
              segment: {{in_dir: {download}, scorer: llm, model: {MODEL}}}
              annotate: {{model: {MODEL}}}
            """
        )
    )
    result = CliRunner().invoke(app, ["run", str(plan), "--check"], env={**WIDE, "OPENAI_API_KEY": ""})
    assert result.exit_code == 0, result.output
    assert f"  estimate for 12 traces with {MODEL}, LLM boundary scores, windows of 16 " in result.output
    assert f"  estimate for 12 traces with {MODEL}, judge per-memento " in result.output
    assert "in memory with the heuristic scorer" in result.output
    assert not (tmp_path / "w").exists()
