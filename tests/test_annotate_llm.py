"""`annotate` through the real openai client against the loopback stand-in: every fault takes its path.

Documented paths (openmementos.annotate.recipe):
* 429 (retry-after), 500, a hung request (timeout), a truncated body, a 200 that is not JSON: the engine
  retries; the trace is annotated as if nothing happened.
* a compress answer with too few mementos, prose instead of JSON, a placeholder: re-ask for exactly
  those segments; never padded.
* a segment that never gets a memento: quarantine `mementos_incomplete`.
* a judge that never answers readably: quarantine `judge_unreadable`.
* a memento below the threshold: refined and judged again; the best version is kept.
* a request the server refuses (4xx): quarantine `request_rejected`; retries exhausted: the run stops.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from support.annotate_script import assert_each_once, make_trace, read_output, responder, write_segmented
from support.openai_standin import ErrorReply, FaultRule, Faults, OpenAIStandIn
from typer.testing import CliRunner

from openmementos.annotate.accounting import LiveStatus
from openmementos.annotate.prompting import default_prompts
from openmementos.annotate.recipe import Recipe
from openmementos.annotate.request import RecipeSettings
from openmementos.annotate.stage import REFUSAL_STREAK, AnnotatorShards
from openmementos.cli import app
from openmementos.llm import ChatRequest, ChatResult, EngineStats, RequestRejected, RetriesExhausted
from openmementos.runtime.manifest import StageError
from openmementos.runtime.stage import Quarantined, ShardTask, Stage
from openmementos.schema import AnnotatedTrace

SECRET = "sk-test-DO-NOT-LEAK-4242"


def scripted_traces() -> list:
    return [
        make_trace(0),
        make_trace(1, problem_marker="FEWER"),
        make_trace(2, problem_marker="PROSE"),
        make_trace(3, problem_marker="PLACEHOLDER"),
        make_trace(4, problem_marker="NEVER"),
        make_trace(5, block_markers={1: "WEAK"}),
        make_trace(6, block_markers={0: "STUBBORN"}),
        make_trace(7, block_markers={2: "MUTE"}),
        make_trace(8, n_blocks=1),
        make_trace(9, n_blocks=5),
        make_trace(10, problem_marker="TRUNCATED"),
    ]


def run_annotate(in_dir: Path, out_dir: Path, base_url: str, *extra: str) -> tuple[int, str]:
    args = ["annotate", str(in_dir), str(out_dir), "--model", "gpt-4.1-mini", "--base-url", base_url]
    result = CliRunner().invoke(app, [*args, "--api-key", SECRET, "--timeout", "1", *extra])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.output


@pytest.fixture
def segmented(tmp_path: Path) -> tuple[Path, list]:
    traces = scripted_traces()
    return write_segmented(tmp_path / "segmented", [traces[:5], traces[5:]]), traces


def test_faults_take_their_documented_paths(tmp_path: Path, segmented: tuple[Path, list]) -> None:
    in_dir, traces = segmented
    faults = Faults(
        latency_s=0.01,
        rate_limit=FaultRule(first=2),
        retry_after_s=0.05,
        server_error=FaultRule(every=11),
        hang=FaultRule(every=23),
        hang_s=3.0,
        truncate=FaultRule(every=29),
        malformed_body=FaultRule(every=31),
    )
    out = tmp_path / "annotated"
    with OpenAIStandIn(faults, responder=responder) as server:
        code, output = run_annotate(in_dir, out, server.base_url)
        injected = server.stats().faults
    assert code == 0, output
    assert {"rate_limit", "server_error", "hang", "truncate", "malformed_body"} <= set(injected)

    rows, quarantined = assert_each_once(out, [trace.id for trace in traces])
    assert quarantined == {"trace-0004": "mementos_incomplete", "trace-0007": "judge_unreadable"}
    by_id = {row.id: row for row in rows}
    for row in rows:
        assert len(row.mementos) == len(row.blocks) and row.annotator_model == "gpt-4.1-mini"
        assert row.prompt_version == default_prompts().version
        assert all("N/A" not in memento for memento in row.mementos)  # never padded, never a placeholder
        assert row.usage.requests >= 1 + len(row.blocks) and row.usage.prompt_tokens > 0
    plain = by_id["trace-0000"]
    assert [review.final_score for review in plain.reviews] == [9.0, 9.0, 9.0]
    assert plain.usage.requests == 1 + 3  # one compress call, one judge call per memento
    for fixed in ("trace-0001", "trace-0002", "trace-0003", "trace-0010"):  # re-asked: one more request
        assert by_id[fixed].usage.requests == 1 + 1 + 3
    weak = by_id["trace-0005"].reviews[1]
    assert [r.score for r in weak.rounds] == [5.0, 9.0] and weak.kept == 1
    assert by_id["trace-0005"].mementos[1].startswith("better ")
    stubborn = by_id["trace-0006"].reviews[0]
    assert [r.score for r in stubborn.rounds] == [6.0, 4.0] and stubborn.kept == 0
    assert stubborn.final_score == 6.0 and by_id["trace-0006"].mementos[0].startswith("weak ")
    assert all(r.feedback.startswith("- ") and r.prompt_tokens > 0 for r in stubborn.rounds)

    summary = json.loads((out / "annotate_report.json").read_text())
    assert summary["complete"] and summary["traces"]["quarantine_reasons"] == {
        "judge_unreadable": 1,
        "mementos_incomplete": 1,
    }
    retries = summary["last_run"]["engine"]["retries"]
    assert {"rate_limited", "server_error", "timeout"} <= set(retries)
    assert retries.get("malformed", 0) + retries.get("connection", 0) >= 2
    assert summary["usage"]["by_step"]["reask"]["requests"] == 4 + 2  # NEVER: asked twice, then quarantined
    assert summary["usage"]["by_step"]["refine"]["requests"] == 2
    judged = sum(len(row.blocks) for row in rows)
    assert summary["judge"]["mementos_judged"] == judged
    assert summary["judge"]["pass_rate_after_round"] == {
        "1": round((judged - 2) / judged, 4),
        "2": round((judged - 1) / judged, 4),
    }
    assert summary["judge"]["kept_below_threshold"] == 1

    leaked = [path for path in tmp_path.rglob("*") if path.is_file() and SECRET.encode() in path.read_bytes()]
    assert leaked == [] and SECRET not in output


def test_no_judge_is_a_single_pass_and_a_rerun_sends_nothing(tmp_path: Path) -> None:
    traces = [make_trace(n) for n in range(6)]
    in_dir = write_segmented(tmp_path / "segmented", [traces])
    with OpenAIStandIn(Faults(), responder=responder) as server:
        code, output = run_annotate(in_dir, tmp_path / "annotated", server.base_url, "--judge", "off")
        assert code == 0, output
        assert server.stats().chat_requests == 6
        code, output = run_annotate(in_dir, tmp_path / "again", server.base_url, "--judge", "off", "--cache-dir",
                                    str(tmp_path / "annotated" / ".llm"))  # fmt: skip
        assert code == 0, output
        assert server.stats().chat_requests == 6, "a second run over the same cache sends nothing"
    rows, quarantined = read_output(tmp_path / "annotated")
    assert len(rows) == 6 and not quarantined
    assert all(row.reviews == [] and row.usage.requests == 1 for row in rows)
    assert [row.mementos for row in rows] == [row.mementos for row in read_output(tmp_path / "again")[0]]


def test_limit_and_shard_selection(tmp_path: Path) -> None:
    traces = [make_trace(n) for n in range(9)]
    in_dir = write_segmented(tmp_path / "segmented", [traces[:3], traces[3:6], traces[6:]])
    out = tmp_path / "annotated"
    with OpenAIStandIn(Faults(), responder=responder) as server:
        code, output = run_annotate(in_dir, out, server.base_url, "--judge", "off", "--shard", "0/2", "--limit", "4")
    assert code == 0, output
    rows, _ = read_output(out)
    assert [row.id for row in rows] == ["trace-0000", "trace-0001", "trace-0002", "trace-0006"]
    summary = json.loads((out / "annotate_report.json").read_text())
    assert summary["shards"] == {"done": 2, "total": 3} and not summary["complete"]


def test_options_that_change_the_output_cannot_resume_a_folder(tmp_path: Path) -> None:
    in_dir = write_segmented(tmp_path / "segmented", [[make_trace(0)]])
    with OpenAIStandIn(Faults(), responder=responder) as server:
        assert run_annotate(in_dir, tmp_path / "out", server.base_url)[0] == 0
        code, output = run_annotate(in_dir, tmp_path / "out", server.base_url, "--threshold", "9")
    assert code == 1 and "other options" in output


def test_model_is_required_once_an_endpoint_is_configured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    in_dir = write_segmented(tmp_path / "segmented", [[make_trace(0)]])
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    result = CliRunner().invoke(app, ["annotate", str(in_dir), str(tmp_path / "out")])
    assert result.exit_code == 2 and "--model" in result.output and SECRET not in result.output
    monkeypatch.delenv("OPENAI_API_KEY")
    result = CliRunner().invoke(app, ["annotate", str(in_dir), str(tmp_path / "out")])
    assert result.exit_code == 0, result.output  # no endpoint, no key: the extractive annotator
    assert read_output(tmp_path / "out")[0][0].annotator_model == "extractive"


class ScriptedEngine:
    """A completer that raises a given engine error for compress requests (recipe unit tests)."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.stats = EngineStats()

    async def complete(self, request: ChatRequest) -> ChatResult:
        raise self.error

    async def close(self) -> None:
        pass


def test_a_refused_request_quarantines_and_exhausted_retries_stop_the_run() -> None:
    trace = make_trace(0)
    settings = RecipeSettings(model="m")
    refused = Recipe(ScriptedEngine(RequestRejected(status=400, detail="context length exceeded")), settings)
    outcome = asyncio.run(refused.annotate(trace))
    assert isinstance(outcome.item, Quarantined) and outcome.item.reason == "request_rejected"
    assert "context length" in outcome.item.detail
    down = Recipe(ScriptedEngine(RetriesExhausted(reason="server_error", attempts=6, last_status=500)), settings)
    with pytest.raises(RetriesExhausted):
        asyncio.run(down.annotate(trace))


def test_annotated_rows_render_to_the_public_format(tmp_path: Path) -> None:
    in_dir = write_segmented(tmp_path / "segmented", [[make_trace(n, n_blocks=2 + n) for n in range(3)]])
    with OpenAIStandIn(Faults(), responder=responder) as server:
        assert run_annotate(in_dir, tmp_path / "out", server.base_url)[0] == 0
    rows, _ = read_output(tmp_path / "out")
    for row in rows:
        assert isinstance(row, AnnotatedTrace)
        full = row.to_full_row()
        assert full.block_summaries == row.mementos and "".join(full.sentences) == row.reasoning


def test_a_server_refusing_everything_stops_the_run_instead_of_quarantining_it(tmp_path: Path) -> None:
    in_dir = write_segmented(tmp_path / "segmented", [[make_trace(n) for n in range(REFUSAL_STREAK + 2)]])
    out = tmp_path / "annotated"

    async def open_engine() -> ScriptedEngine:
        return ScriptedEngine(RequestRejected(status=400, detail="Unsupported value: 'temperature'"))

    live = LiveStatus(REFUSAL_STREAK + 2)
    with AnnotatorShards(out, RecipeSettings(model="m"), open_engine, live, window=4) as process:
        stage = Stage(name="annotate", out_dir=out, model=AnnotatedTrace, process=process)
        with pytest.raises(StageError, match="refused the requests of 10 traces in a row"):
            stage.run([ShardTask(0, "part-00000", in_dir / "part-00000.parquet")])
    assert not (out / "part-00000.parquet").exists() and not list((out / "quarantine").iterdir())


def test_nothing_listening_fails_within_seconds_naming_the_url(tmp_path: Path) -> None:
    import socket
    import time

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    in_dir = write_segmented(tmp_path / "segmented", [[make_trace(0)]])
    start = time.monotonic()
    code, output = run_annotate(in_dir, tmp_path / "out", f"http://127.0.0.1:{port}/v1")
    assert code == 1 and f"http://127.0.0.1:{port}/v1" in output and "nothing listening" in output
    assert time.monotonic() - start < 10
    assert "shards done" not in output  # nothing ran: no report of a run
    assert not (tmp_path / "out").exists()  # a refused run leaves no folder (not even an empty cache)


def test_an_unknown_model_is_refused_before_any_request(tmp_path: Path) -> None:
    in_dir = write_segmented(tmp_path / "segmented", [[make_trace(0)]])
    with OpenAIStandIn(Faults(served_models=("llama-3-8b",)), responder=responder) as server:
        code, output = run_annotate(in_dir, tmp_path / "out", server.base_url)
        assert server.stats().chat_requests == 0
    assert code == 1 and "does not serve the model 'gpt-4.1-mini'; it serves: llama-3-8b" in output


def test_a_failed_unsharded_run_says_to_rerun_not_to_run_other_shards(tmp_path: Path) -> None:
    traces = [make_trace(n) for n in range(REFUSAL_STREAK + 2)]
    in_dir = write_segmented(tmp_path / "segmented", [traces[:2], traces[2:]])

    def refusing(body: dict) -> str:
        if "Problem 0:" in json.dumps(body) or "Problem 1:" in json.dumps(body):
            return responder(body)  # the first shard is done
        raise ErrorReply(400, "Unsupported value: 'temperature'")

    with OpenAIStandIn(Faults(), responder=refusing) as server:
        code, output = run_annotate(in_dir, tmp_path / "out", server.base_url, "--judge", "off")
    assert code == 1 and "refused the requests of 10 traces in a row" in output
    assert "1/2 shards done (rerun the same command to resume)" in output and "--shard" not in output
