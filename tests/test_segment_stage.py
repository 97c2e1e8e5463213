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
from openmementos.segment.request import SegmentSettings
from openmementos.segment.scorers import HeuristicScorer
from openmementos.segment.stage import segment_trace

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
    assert re.search(r"blocks per trace: median [\d.]+ \(code [\d.]+, math [\d.]+, science [\d.]+\)", result.output)
    assert f"openmementos segment {tmp_path / 'seg'} --explain [TRACE_ID]" in result.output
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


def test_published_objective_by_default_and_per_cut_on_request(download_dir: Path, tmp_path: Path) -> None:
    assert run(str(download_dir), str(tmp_path / "published")).exit_code == 0
    per_cut = run(str(download_dir), str(tmp_path / "per-cut"), "--objective", "per-cut")
    assert per_cut.exit_code == 0, per_cut.output
    assert read_manifest(tmp_path / "published").options["objective"] == "published"
    assert read_manifest(tmp_path / "per-cut").options["objective"] == "per-cut"
    published_blocks = sorted(len(t.blocks) for t in rows(tmp_path / "published"))
    per_cut_blocks = sorted(len(t.blocks) for t in rows(tmp_path / "per-cut"))
    # The mean over the cuts only: one strong, central cut wins (2 blocks); over all K blocks: ~5 on these.
    assert per_cut_blocks[len(per_cut_blocks) // 2] == 2
    assert published_blocks[len(published_blocks) // 2] >= 4


def test_limit_segments_the_first_traces_only(download_dir: Path, tmp_path: Path) -> None:
    result = run(str(download_dir), str(tmp_path / "trial"), "--limit", "4")
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "trial")
    assert manifest.rows + manifest.quarantined == 4 and manifest.options["limit"] == 4
    first_shard = [t.id for t in iter_stage(download_dir, SourceTrace)][:4]
    assert [t.id for t in rows(tmp_path / "trial")] == [i for i in first_shard if i != "empty"]
    sharded = run(str(download_dir), str(tmp_path / "sharded"), "--limit", "3", "--shard", "1/3")
    assert sharded.exit_code == 0 and read_manifest(tmp_path / "sharded").rows == 3


def test_explain_prints_the_tradeoff_blocks_scores_and_rules(download_dir: Path, tmp_path: Path) -> None:
    assert run(str(download_dir), str(tmp_path / "seg")).exit_code == 0
    trace = max(rows(tmp_path / "seg"), key=lambda t: len(t.blocks))
    result = runner.invoke(app, ["segment", str(tmp_path / "seg"), "--explain", trace.id], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert trace.id in result.output and f"{len(trace.blocks)} blocks" in result.output
    assert "published objective: sum of cut scores / K - λ·CV" in result.output
    assert re.search(r"blank_line\+\w+", result.output)
    # The best J with K blocks for K around the chosen one; the chosen K has the best of them.
    k = len(trace.blocks)
    table = {int(m.group(1)): m.group(0) for m in re.finditer(r"│\s+(\d+) │\s+(-?[\d.]+).*", result.output)}
    assert set(range(max(1, k - 3), k + 4)) <= set(table)
    assert "◀ chosen" in table[k] and "(best)" in table[k]
    header_j = re.search(r"J (-?[\d.]+) \(", result.output).group(1)  # type: ignore[union-attr]
    assert header_j in table[k]
    on_the_fly = runner.invoke(
        app,
        ["segment", str(download_dir), "--explain", trace.id, "--max-block-tokens", "600"],
        env={"COLUMNS": "200"},
    )
    assert on_the_fly.exit_code == 0, on_the_fly.output
    blocks = int(re.search(r"(\d+) blocks", on_the_fly.output).group(1))  # type: ignore[union-attr]
    assert blocks > len(trace.blocks)
    missing = run(str(tmp_path / "seg"), "--explain", "no-such-id")
    assert missing.exit_code == 1 and "no trace with id" in missing.output and "some traces in" in missing.output


def test_explain_without_an_id_lists_some(download_dir: Path, tmp_path: Path) -> None:
    assert run(str(download_dir), str(tmp_path / "seg")).exit_code == 0
    for folder, stage in ((tmp_path / "seg", "segment"), (download_dir, "download")):
        listed = runner.invoke(app, ["segment", str(folder), "--explain"], env={"COLUMNS": "200"})
        assert listed.exit_code == 0, listed.output
        assert (
            f"(`{stage}` output)" in listed.output
            and f"openmementos segment {folder} --explain TRACE_ID" in listed.output
        )
        ids = re.findall(r"│ (\S+)\s+│ (code|math|science)\s+│\s+([\d,]+) │", listed.output)
        assert {domain for _, domain, _ in ids} == {"code", "math", "science"} and len(ids) <= 12
        assert all(int(tokens.replace(",", "")) > 0 for _, _, tokens in ids)


def test_explain_reads_the_objective_a_folder_was_made_with(download_dir: Path, tmp_path: Path) -> None:
    assert run(str(download_dir), str(tmp_path / "seg"), "--objective", "per-cut").exit_code == 0
    trace = next(iter(rows(tmp_path / "seg")))
    result = runner.invoke(app, ["segment", str(tmp_path / "seg"), "--explain", trace.id], env={"COLUMNS": "200"})
    assert "per-cut objective: sum of cut scores / (K - 1) - λ·CV" in result.output
    # A folder from before the option existed was made with the per-cut objective.
    manifest = json.loads((tmp_path / "seg" / "manifest.json").read_text())
    del manifest["options"]["objective"]
    (tmp_path / "seg" / "manifest.json").write_text(json.dumps(manifest))
    result = runner.invoke(app, ["segment", str(tmp_path / "seg"), "--explain", trace.id], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "per-cut objective" in result.output


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
    # MEMENTO-sized with default options (published: ~9 blocks of ~1,150 tokens): 11 of ~1,130 today.
    assert 7 <= len(segmented.blocks) <= 14
    assert 800 <= sum(segmented.block_tokens) / len(segmented.blocks) <= 1600
    capped = segment_trace(trace, HeuristicScorer(), SegmentSettings(max_block_tokens=1024))
    assert len(capped.blocks) > len(segmented.blocks) and max(capped.block_tokens) <= 1024
