"""`openmementos download` from local files and the embedded sample (no Hub involved)."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from support.ot3_rows import expected_reason, ot3_row, write_ot3_parquet

from openmementos.download import DownloadRequest, run_download
from openmementos.download.mapping import ColumnMapping
from openmementos.resources import sample_files
from openmementos.runtime.manifest import StageError, iter_stage, read_manifest
from openmementos.runtime.shardio import read_quarantine
from openmementos.schema import SourceTrace

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ot3_example_trace.jsonl"
ROWS, SHARDS = 300, 3
CLI = [sys.executable, "-c", "from openmementos.cli import app; app(prog_name='openmementos')"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ot3")
    write_ot3_parquet(folder, ROWS, SHARDS, row_group_size=64)
    return folder


def traces(out: Path) -> list[SourceTrace]:
    return list(iter_stage(out, SourceTrace))


def run(out: Path, input: Path, **options) -> object:
    return run_download(DownloadRequest(out_dir=out, input=input, **{"workers": 1, **options}))


def test_sample_downloads_offline_and_filters_the_truncated_and_cjk_rows(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    command = [*CLI, "download", str(tmp_path / "out"), "--sample"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    manifest = read_manifest(tmp_path / "out")
    assert manifest.complete and manifest.options["input"]["kind"] == "sample"
    assert manifest.reasons() == {"unclosed_think": 1, "cjk": 1}
    source_rows = [json.loads(line) for f in sample_files() for line in f.read_text().splitlines() if line.strip()]
    written = traces(tmp_path / "out")
    assert len(written) == len(source_rows) - 2 == manifest.rows
    assistant = {row["conversations"][1]["value"] for row in source_rows}
    assert all(trace.assistant_text() in assistant for trace in written)  # lossless split
    assert len({trace.id for trace in written}) == len(written)
    assert f"{len(written)} traces written, 2 quarantined" in result.stdout


def test_every_bad_row_is_quarantined_with_its_reason_and_a_pointer(corpus, tmp_path):
    manifest = run(tmp_path, corpus).manifest
    expected = Counter(reason for i in range(ROWS) if (reason := expected_reason(i)))
    assert manifest.complete and manifest.reasons() == expected and len(expected) == 8
    assert manifest.rows == ROWS - sum(expected.values()) == len(traces(tmp_path))
    per_shard = ROWS // SHARDS
    for record in read_quarantine(tmp_path):
        pointer = json.loads(record.record)
        shard = int(pointer["file"].split("-")[1])
        assert record.reason == expected_reason(shard * per_shard + pointer["row"])
        assert record.id == f"{pointer['file']}#{pointer['row']}"
    assert {s.name: s.rows + s.quarantined for s in manifest.done.values()} == {
        f"part-{k:05d}": per_shard for k in range(SHARDS)
    }


def test_stratified_selection_is_exact_and_sharded_runs_equal_one_run(corpus, tmp_path):
    selection = {"seed": 5, "limit": 120, "ratio": ["math=0.5", "code=0.3", "science=0.2"]}
    whole = run(tmp_path / "whole", corpus, **selection)
    summary = whole.plan.summary
    assert summary["drawn"] == {"math": 60, "code": 36, "science": 24}
    assert summary["not_selected"] == ROWS - summary["unclassified"] - 120
    manifest = whole.manifest
    assert manifest.rows + manifest.quarantined == 120 + summary["unclassified"]  # rows without domain pass on
    written = Counter(trace.domain for trace in traces(tmp_path / "whole"))
    dropped = Counter(json.loads(q.record)["domain"] for q in read_quarantine(tmp_path / "whole"))
    assert {d: written[d] + dropped[d] for d in written} == summary["drawn"]
    assert manifest.options["selection"]["request"]["ratios"] == {"code": 0.3, "math": 0.5, "science": 0.2}

    sharded = tmp_path / "sharded"
    first = run(sharded, corpus, **selection, shard="0/2").manifest
    assert not first.complete
    assert run(sharded, corpus, **selection, shard="1/2").manifest.complete
    parallel = run(tmp_path / "parallel", corpus, **selection, workers=2).manifest
    assert traces(sharded) == traces(tmp_path / "whole") == traces(tmp_path / "parallel")
    assert list(read_quarantine(sharded)) == list(read_quarantine(tmp_path / "whole"))
    assert parallel.options_hash == read_manifest(sharded).options_hash == manifest.options_hash


def test_resuming_with_other_options_is_refused_before_any_work(corpus, tmp_path):
    run(tmp_path, corpus, limit=10)
    with pytest.raises(StageError, match=r"other options: selection_request\.limit was 10, now 11"):
        run(tmp_path, corpus, limit=11)
    again = run(tmp_path, corpus, limit=10)  # same options: a no-op resume
    assert again.manifest.complete


def test_download_output_reads_back_losslessly_and_a_selection_can_be_drawn_from_it(corpus, tmp_path):
    run(tmp_path / "all", corpus)
    run(tmp_path / "copy", tmp_path / "all")
    assert traces(tmp_path / "copy") == traces(tmp_path / "all")
    picked = run(tmp_path / "picked", tmp_path / "all", limit=50, domains="math")
    assert picked.manifest.rows == 50 and picked.manifest.quarantined == 0  # clean input: exact output count


def test_column_mappings_for_other_corpora(tmp_path):
    think = "<think>\nFirst we expand the square on the left side. Next we collect the terms in x.\n</think>\n\nx = 2"
    bare = "First we add two to both sides of it. Next we divide both sides by three."
    rows = [
        {"task_id": "t-1", "question": "Solve x + 1 = 3.", "cot": think},
        {"task_id": "t-2", "question": "Solve 3x - 2 = 4.", "cot": bare, "final": "x = 2"},
    ]
    (tmp_path / "mine.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mapping = {"problem_column": "question", "reasoning_column": "cot", "set": ["domain=math", "source=mine"]}
    run(tmp_path / "a", tmp_path / "mine.jsonl", **mapping)
    (tagged,) = traces(tmp_path / "a")
    assert (tagged.id, tagged.domain, tagged.source, tagged.difficulty) == ("t-1", "math", "mine", None)
    assert tagged.assistant_text() == think and tagged.answer == "x = 2"
    assert read_manifest(tmp_path / "a").reasons() == {"empty_answer": 1}  # t-2's answer is in a column not named

    answered = {**mapping, "answer_column": "final", "set": ["domain=math", "source=m"]}
    run(tmp_path / "b", tmp_path / "mine.jsonl", **answered)
    (wrapped,) = traces(tmp_path / "b")
    assert (wrapped.id, wrapped.reasoning, wrapped.answer) == ("t-2", bare, "x = 2")
    assert read_manifest(tmp_path / "b").reasons() == {"not_a_string": 1}  # t-1 has no "final" value

    chat = {
        "messages": [
            {"role": "system", "content": "Be careful."},
            {"role": "user", "content": "Solve x + 1 = 3."},
            {"role": "assistant", "content": think},
        ],
        "domain": "math",
        "source": "chat",
        "difficulty": 4,
    }
    (tmp_path / "chat.jsonl").write_text(json.dumps(chat) + "\n\n" + "{not json\n" + "[1, 2]\n")
    run(tmp_path / "c", tmp_path / "chat.jsonl")
    (trace,) = traces(tmp_path / "c")
    assert trace.problem == "Solve x + 1 = 3." and trace.difficulty == 4 and trace.assistant_text() == think
    unreadable = sorted((q.id, q.reason) for q in read_quarantine(tmp_path / "c"))
    assert unreadable == [("chat.jsonl#2", "unreadable"), ("chat.jsonl#3", "unreadable")]


def test_missing_columns_are_explained(tmp_path):
    (tmp_path / "odd.jsonl").write_text(json.dumps({"text": "hi", "domain": "math", "source": "s"}) + "\n")
    with pytest.raises(ValueError, match="cannot tell which columns hold the trace"):
        run(tmp_path / "out", tmp_path / "odd.jsonl")
    with pytest.raises(ValueError, match="no column prompt"):
        run(tmp_path / "out", tmp_path / "odd.jsonl", problem_column="prompt", reasoning_column="text")
    (tmp_path / "nodomain.jsonl").write_text(json.dumps({"problem": "p", "cot": "c"}) + "\n")
    with pytest.raises(ValueError, match="--set domain=VALUE"):
        run(tmp_path / "out", tmp_path / "nodomain.jsonl", problem_column="problem", reasoning_column="cot")


def test_datasets_save_to_disk_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [ot3_row(i) for i in range(20)]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    run(tmp_path / "from_arrow", tmp_path / "saved")
    run(tmp_path / "from_jsonl", tmp_path / "rows.jsonl")
    assert traces(tmp_path / "from_arrow") == traces(tmp_path / "from_jsonl")
    assert read_manifest(tmp_path / "from_arrow").reasons() == read_manifest(tmp_path / "from_jsonl").reasons()


@pytest.mark.skipif(not FIXTURE.exists(), reason="the real OpenThoughts3 trace fixture is not present")
def test_real_openthoughts_trace_with_a_reasoning_column(tmp_path):
    mapping = ColumnMapping(problem="problem", reasoning="cot")
    row = json.loads(FIXTURE.read_text().splitlines()[0])
    trace = mapping.resolve(list(row)).to_trace(row)
    assert trace.id == row["task_id"] and trace.domain == row["domain"]
    assert trace.assistant_text().startswith(row["cot"])
    run(tmp_path, FIXTURE, problem_column="problem", reasoning_column="cot")
    (record,) = read_quarantine(tmp_path)
    assert record.reason == "empty_answer"  # the fixture keeps only the <think> section
