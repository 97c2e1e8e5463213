"""`openmementos segment` end to end: download-shaped shards in, lossless SegmentedTrace shards out."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from support.trace_builders import write_stage_folder
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.resources import sample_traces
from openmementos.runtime.manifest import iter_stage, read_manifest
from openmementos.runtime.shardio import read_quarantine
from openmementos.schema import SegmentedTrace, SourceTrace
from openmementos.segment.scorers import HeuristicScorer
from openmementos.segment.stage import SegmentSettings, segment_trace

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ot3_example_trace.jsonl"
runner = CliRunner()


def odd_traces() -> list[SourceTrace]:
    base = {"problem": "p", "answer": "a", "domain": "math", "source": "test"}
    return [
        SourceTrace(id="empty", reasoning="  \n", **base),
        SourceTrace(id="one-sentence", reasoning="Just one short thought here.", **base),
        SourceTrace(id="huge-sentence", reasoning="word " * 3000 + "end.\n\nShort tail sentence here.", **base),
    ]


@pytest.fixture(scope="module")
def download_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder shaped like `openmementos download` output: 3 shards of SourceTrace, manifest, done markers."""
    out = tmp_path_factory.mktemp("download")
    traces = sample_traces() + odd_traces()
    write_stage_folder(out, "download", SourceTrace, [traces[i::3] for i in range(3)])
    return out


def run(*args: str) -> object:
    result = runner.invoke(app, ["segment", *args])
    return result


def rows(directory: Path) -> list[SegmentedTrace]:
    return list(iter_stage(directory, SegmentedTrace))


def test_segments_every_trace_losslessly(download_dir: Path, tmp_path: Path) -> None:
    result = run(str(download_dir), str(tmp_path / "seg"))
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "seg")
    inputs = len(sample_traces()) + len(odd_traces())
    assert manifest.complete and manifest.rows + manifest.quarantined == inputs
    assert manifest.reasons() == {"empty_reasoning": 1}
    assert "blocks per trace: median" in result.output
    for trace in rows(tmp_path / "seg"):
        assert "".join(trace.sentences()) == trace.reasoning
        assert "".join(trace.block_texts()) == trace.reasoning
        assert trace.block_tokens == [sum(trace.sentence_tokens[a : b + 1]) for a, b in trace.blocks]
        assert len(trace.blocks) == 1 or min(trace.block_tokens) >= 200
        assert trace.scorer == "heuristic" and trace.tokenizer == "cl100k_base"
    quarantined = list(read_quarantine(tmp_path / "seg"))
    assert [q.id for q in quarantined] == ["empty"] and quarantined[0].stage == "segment"


def test_cap_is_respected_and_impossible_traces_are_quarantined(download_dir: Path, tmp_path: Path) -> None:
    result = run(str(download_dir), str(tmp_path / "seg"), "--max-block-tokens", "1000")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "seg")
    assert manifest.reasons() == {"empty_reasoning": 1, "no_feasible_partition": 1}
    reasons = {q.id: q for q in read_quarantine(tmp_path / "seg")}
    assert "largest sentence" in reasons["huge-sentence"].detail
    for trace in rows(tmp_path / "seg"):
        assert max(trace.block_tokens) <= 1000
    traces = [t for t in rows(tmp_path / "seg") if sum(t.sentence_tokens) > 3000]
    assert traces and all(len(t.blocks) >= 4 for t in traces)


def test_resume_shards_and_workers_give_the_same_output(download_dir: Path, tmp_path: Path) -> None:
    assert run(str(download_dir), str(tmp_path / "one")).exit_code == 0
    first = [t.model_dump() for t in rows(tmp_path / "one")]
    again = run(str(download_dir), str(tmp_path / "one"))
    assert again.exit_code == 0 and [t.model_dump() for t in rows(tmp_path / "one")] == first
    for index in range(2):
        assert run(str(download_dir), str(tmp_path / "sharded"), "--shard", f"{index}/2").exit_code == 0
    assert [t.model_dump() for t in rows(tmp_path / "sharded")] == first
    assert read_manifest(tmp_path / "sharded").complete
    assert run(str(download_dir), str(tmp_path / "parallel"), "--workers", "2").exit_code == 0
    assert [t.model_dump() for t in rows(tmp_path / "parallel")] == first
    refused = run(str(download_dir), str(tmp_path / "one"), "--lambda", "1.0")
    assert refused.exit_code == 1 and "other options" in refused.output


def test_explain_prints_blocks_scores_and_rules(download_dir: Path, tmp_path: Path) -> None:
    assert run(str(download_dir), str(tmp_path / "seg")).exit_code == 0
    trace = max(rows(tmp_path / "seg"), key=lambda t: len(t.blocks))
    result = runner.invoke(app, ["segment", str(tmp_path / "seg"), "--explain", trace.id], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert trace.id in result.output and f"{len(trace.blocks)} blocks" in result.output
    assert re.search(r"blank_line\+\w+", result.output)
    on_the_fly = runner.invoke(
        app,
        ["segment", str(download_dir), "--explain", trace.id, "--max-block-tokens", "600"],
        env={"COLUMNS": "200"},
    )
    assert on_the_fly.exit_code == 0, on_the_fly.output
    blocks = int(re.search(r"(\d+) blocks", on_the_fly.output).group(1))  # type: ignore[union-attr]
    assert blocks > len(trace.blocks)
    missing = run(str(tmp_path / "seg"), "--explain", "no-such-id")
    assert missing.exit_code == 1 and "no trace with id" in missing.output


def test_usage_errors(download_dir: Path, tmp_path: Path) -> None:
    assert run(str(download_dir)).exit_code != 0
    low_cap = run(str(download_dir), str(tmp_path / "x"), "--max-block-tokens", "100")
    assert low_cap.exit_code == 2 and "below --min-block-tokens" in low_cap.output
    no_model = run(str(download_dir), str(tmp_path / "x"), "--scorer", "llm")
    assert no_model.exit_code != 0 and "--model" in no_model.output
    incomplete = tmp_path / "incomplete"
    incomplete.mkdir()
    missing = run(str(incomplete), str(tmp_path / "y"))
    assert missing.exit_code == 1 and "manifest" in missing.output


def test_fixture_trace() -> None:
    if not FIXTURE.exists():
        pytest.skip(f"fixture {FIXTURE} is absent")
    row = json.loads(FIXTURE.read_text().splitlines()[0])
    trace = SourceTrace.from_assistant_text(
        row["cot"] + "\nanswer", id=row["task_id"], problem=row["problem"], domain=row["domain"], source=row["source"]
    )
    segmented = segment_trace(trace, HeuristicScorer(), SegmentSettings())
    assert "".join(segmented.block_texts()) == trace.reasoning
    math_regions = [m.span() for m in re.finditer(r"\\\(.*?\\\)|\\\[.*?\\\]", trace.reasoning, re.DOTALL)]
    cuts = [start for start, _ in segmented.sentence_spans[1:]]
    assert not any(a < cut < b for cut in cuts for a, b in math_regions)
    assert 2 <= len(segmented.blocks) <= 20
    capped = segment_trace(trace, HeuristicScorer(), SegmentSettings(max_block_tokens=1536))
    assert 8 <= len(capped.blocks) <= 20 and max(capped.block_tokens) <= 1536
