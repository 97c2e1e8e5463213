"""`annotate` against a server that answers like llama.cpp and a model that answers like a weak one.

The stand-in refuses `json_schema` with llama-cpp-python's HTTP 500 (its request model's validation
error) and takes `json_object` with the schema; the scripted model runs lists past the last block,
writes one-character mementos at temperature 0, loops on fixes until the token limit and grades out of
range (support/annotate_script.py). The run must finish, refuse at most one request per form, annotate
>= 90 % of the traces, and write nothing that `validate` (default options) then rejects.
"""

from __future__ import annotations

import json
from pathlib import Path

from support.annotate_script import make_trace, read_output, responder, write_segmented
from support.openai_standin import Faults, OpenAIStandIn
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.runtime.manifest import iter_stage
from openmementos.schema import AnnotatedTrace

MODEL = "gemma-3-270m"


def weak_traces() -> list:
    traces = []
    for n in range(20):
        problem = ("RUNAWAY", "TERSE", "", "")[n % 4]
        block = {0: "LOOPING"} if n % 5 == 1 else {2: "WILD"} if n % 5 == 2 else {}
        traces.append(make_trace(n, problem_marker=problem, block_markers=block))
    traces.append(make_trace(20, problem_marker="NEVER"))  # block 2 never gets a memento
    return traces


def annotate(in_dir: Path, out_dir: Path, base_url: str, *extra: str) -> str:
    args = ["annotate", str(in_dir), str(out_dir), "--model", MODEL, "--base-url", base_url, "--concurrency", "8"]
    result = CliRunner().invoke(app, [*args, *extra])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_weak_model_behind_llamacpp_gives_data_that_validate_keeps_whole(tmp_path: Path) -> None:
    traces = weak_traces()
    in_dir = write_segmented(tmp_path / "segmented", [traces[:11], traces[11:]])
    bodies: list[dict] = []

    def recording(body: dict) -> object:
        bodies.append(body)
        return responder(body)

    faults = Faults(llamacpp_response_format=True, served_models=(MODEL,))
    with OpenAIStandIn(faults, responder=recording) as server:
        output = annotate(in_dir, tmp_path / "annotated", server.base_url)
        observed = server.stats()
    assert observed.faults["llamacpp_response_format"] == 1, "one refused request for the endpoint and form"
    assert observed.response_formats["json_schema"] == 1 and observed.response_formats["none"] == 0
    assert f"{server.base_url} refuses structured output as json_schema (HTTP 500): using json_object" in output
    assert f"structured output: {server.base_url}: json_object" in output

    rows, quarantined = read_output(tmp_path / "annotated")
    assert len(rows) + len(quarantined) == len(traces) and len(rows) >= 0.9 * len(traces)
    assert quarantined == {"trace-0020": "mementos_incomplete"}
    by_id = {row.id: row for row in rows}
    for row in rows:
        assert all(len(memento) > 8 for memento in row.mementos), "no one-character memento is kept"
    assert by_id["trace-0001"].mementos[0].startswith("x_0 computed")  # TERSE: fixed by the warmer re-ask
    assert by_id["trace-0006"].reviews[0].rounds[0].score == 9.0  # LOOPING: salvaged, not lost
    assert by_id["trace-0002"].reviews[2].rounds[0].score == 8.0  # WILD: 45 -> 2 and -3 -> 0

    # TERSE at temperature 0 would repeat its junk: the re-ask went out warmer and seeded instead.
    reasks = [b for b in bodies if "TERSE" in b["messages"][0]["content"] and len(b["messages"]) > 2]
    assert reasks and all(b["seed"] == 1 and b["temperature"] == 0.3 for b in reasks)
    # Gemma has no system role: the instructions open the first user turn.
    assert all(b["messages"][0]["role"] == "user" for b in bodies)

    result = CliRunner().invoke(app, ["validate", str(tmp_path / "annotated"), str(tmp_path / "validated")])
    assert result.exit_code == 0, result.output
    kept = list(iter_stage(tmp_path / "validated", AnnotatedTrace))
    assert sorted(row.id for row in kept) == sorted(by_id), result.output
    report = json.loads((tmp_path / "annotated" / "annotate_report.json").read_text())
    assert report["last_run"]["engine"]["structured_output"] == {server.base_url: "json_object"}
