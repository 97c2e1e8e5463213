"""`annotate --batch`: the recipe through the Batch API of the stand-in (files and batches endpoints)."""

from __future__ import annotations

import json
from pathlib import Path

from support.annotate_script import assert_each_once, make_trace, read_output, responder, write_segmented
from support.openai_standin import FaultRule, Faults, OpenAIStandIn
from typer.testing import CliRunner

from openmementos.cli import app


def annotate(in_dir: Path, out_dir: Path, base_url: str, *extra: str) -> str:
    args = ["annotate", str(in_dir), str(out_dir), "--model", "gpt-4.1-mini", "--base-url", base_url]
    result = CliRunner().invoke(app, [*args, "--api-key", "sk-test-batch", *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_batch_run_matches_the_live_run_at_half_the_price(tmp_path: Path) -> None:
    traces = [
        make_trace(0),
        make_trace(1, problem_marker="FEWER"),
        make_trace(2, block_markers={1: "WEAK"}),
        make_trace(3, problem_marker="NEVER"),
        make_trace(4, n_blocks=2),
    ]
    in_dir = write_segmented(tmp_path / "segmented", [traces[:3], traces[3:]])
    faults = Faults(batch_delay_s=0.05, batch_item_error=FaultRule(first=2))
    with OpenAIStandIn(faults, responder=responder) as server:
        annotate(in_dir, tmp_path / "batch", server.base_url, "--batch", "--poll-interval", "0.05")
        stats = server.stats()
        assert stats.chat_requests == 0, "batch mode sends no live chat requests"
        assert stats.routes["POST /v1/batches"] >= 4 and stats.routes["POST /v1/files"] >= 4
        assert stats.faults["batch_item_error"] == 2  # failed items went into a later batch
        annotate(in_dir, tmp_path / "live", server.base_url)

    batch_rows, batch_quarantine = assert_each_once(tmp_path / "batch", [trace.id for trace in traces])
    live_rows, live_quarantine = read_output(tmp_path / "live")
    assert batch_quarantine == live_quarantine == {"trace-0003": "mementos_incomplete"}
    assert [(r.id, r.mementos, r.reviews) for r in batch_rows] == [(r.id, r.mementos, r.reviews) for r in live_rows]
    batch_cost = json.loads((tmp_path / "batch" / "annotate_report.json").read_text())["usage"]["total"]
    live_cost = json.loads((tmp_path / "live" / "annotate_report.json").read_text())["usage"]["total"]
    assert batch_cost["prompt_tokens"] == live_cost["prompt_tokens"] > 0
    assert abs(batch_cost["cost_usd"] - live_cost["cost_usd"] / 2) < 1e-6


def test_per_trace_judge_through_the_batch_api(tmp_path: Path) -> None:
    traces = [make_trace(0), make_trace(1, block_markers={1: "WEAK"}), make_trace(2, n_blocks=2)]
    in_dir = write_segmented(tmp_path / "segmented", [traces])
    with OpenAIStandIn(Faults(batch_delay_s=0.05), responder=responder) as server:
        extra = ("--judge", "per-trace")
        annotate(in_dir, tmp_path / "batch", server.base_url, *extra, "--batch", "--poll-interval", "0.05")
        assert server.stats().chat_requests == 0
        annotate(in_dir, tmp_path / "live", server.base_url, *extra)
    batch_rows, _ = assert_each_once(tmp_path / "batch", [trace.id for trace in traces])
    live_rows, _ = read_output(tmp_path / "live")
    assert [(r.mementos, r.reviews) for r in batch_rows] == [(r.mementos, r.reviews) for r in live_rows]
    assert [r.usage.requests for r in batch_rows] == [2, 4, 2]
