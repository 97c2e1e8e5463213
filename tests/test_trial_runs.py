"""A trial run grows into the full run in the same folder; any other option change is refused, touching nothing.

`--limit N` takes the first N traces in shard order. A rerun with a larger limit, or none, redoes only the
shards the limit cut short (an LLM stage replays the answers it paid for from OUT_DIR/.llm) and keeps
the others as they are; a rerun with another option names it, with the old and the new value.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.annotate_script import assert_each_once, make_trace, responder, write_segmented
from support.openai_standin import Faults, OpenAIStandIn
from support.trace_builders import write_stage_folder
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.resources import sample_traces
from openmementos.runtime.manifest import read_manifest
from openmementos.schema import SourceTrace

WIDE = {"COLUMNS": "250"}
runner = CliRunner()


def invoke(*args: str) -> object:
    result = runner.invoke(app, list(args), env=WIDE)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file of a folder, with its bytes and modification time."""
    return {
        str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def shard_rows(folder: Path) -> list[list[dict]]:
    manifest = read_manifest(folder)
    return [pq.read_table(folder / f"{name}.parquet").to_pylist() for name in manifest.shards]


@pytest.fixture(scope="module")
def download_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished download folder: 3 shards of 8 sample traces."""
    out = tmp_path_factory.mktemp("trial") / "download"
    traces = sample_traces()[:24]
    write_stage_folder(out, "download", SourceTrace, [traces[:8], traces[8:16], traces[16:]])
    return out


def test_a_segment_trial_grows_into_the_full_run(download_dir, tmp_path):
    trial, clean = tmp_path / "seg", tmp_path / "clean"
    assert invoke("segment", str(download_dir), str(trial), "--limit", "10").exit_code == 0
    first = read_manifest(trial)
    assert [first.done[name].taken for name in first.shards] == [8, 2, 0] and first.options["limit"] == 10
    kept = snapshot(trial)

    larger = invoke("segment", str(download_dir), str(trial), "--limit", "12")
    assert larger.exit_code == 0, larger.output
    assert [read_manifest(trial).done[name].taken for name in first.shards] == [8, 4, 0]

    whole = invoke("segment", str(download_dir), str(trial))
    assert whole.exit_code == 0, whole.output
    grown = read_manifest(trial)
    assert grown.complete and grown.options["limit"] is None
    assert [grown.done[name].taken for name in grown.shards] == [8, 8, 8]
    # the shard the trial had finished was kept as it was, not redone
    now = snapshot(trial)
    assert all(now[path] == kept[path] for path in ("part-00000.parquet", ".done/part-00000.json"))
    assert invoke("segment", str(download_dir), str(clean)).exit_code == 0
    assert shard_rows(trial) == shard_rows(clean)
    assert grown.options_hash == read_manifest(clean).options_hash


def test_shrinking_the_limit_or_changing_another_option_is_refused_and_changes_no_file(download_dir, tmp_path):
    out = tmp_path / "seg"
    assert invoke("segment", str(download_dir), str(out), "--limit", "10", "--max-block-tokens", "1536").exit_code == 0
    before = snapshot(out)
    cases = [
        (["--limit", "10", "--max-block-tokens", "1024"], "max_block_tokens was 1536, now 1024"),
        (["--limit", "4", "--max-block-tokens", "1536"], "limit was 10, now 4"),
        (["--limit", "10", "--max-block-tokens", "1536", "--lambda", "1.5"], "lam was 0.5, now 1.5"),
    ]
    for extra, change in cases:
        result = invoke("segment", str(download_dir), str(out), *extra)
        assert result.exit_code == 1
        line = result.output.strip()
        assert line.startswith(f"error: {out} holds a `segment` run made with other options: {change}. ")
        assert "(a larger --limit, or none, continues it)" in line and len(line.splitlines()) == 1
        assert snapshot(out) == before


def annotate(in_dir: Path, out: Path, server: OpenAIStandIn, *extra: str) -> object:
    base = ["annotate", str(in_dir), str(out), "--model", "gpt-4.1-mini", "--base-url", server.base_url]
    return invoke(*base, "--api-key", "sk-test-trial", "--concurrency", "4", *extra)


def test_an_annotate_trial_grows_and_reuses_the_answers_it_paid_for(tmp_path):
    traces = [make_trace(n) for n in range(9)]
    in_dir = write_segmented(tmp_path / "segmented", [traces[:5], traces[5:]])
    out = tmp_path / "annotated"
    with OpenAIStandIn(Faults(), responder=responder) as server:
        trial = annotate(in_dir, out, server, "--limit", "3")
        assert trial.exit_code == 0, trial.output
        assert read_manifest(out).rows == 3
        paid = server.stats().chat_answered
        server.set_faults(Faults())  # count what the next runs send

        refused = annotate(in_dir, out, server, "--threshold", "7")
        assert refused.exit_code == 1
        assert "threshold was 8.0, now 7.0" in refused.output and "limit was 3, now none" not in refused.output
        assert f"--cache-dir {out / '.llm'}" in refused.output  # how to keep the paid answers in a new folder
        assert server.stats().chat_requests == 0

        full = annotate(in_dir, out, server)
        assert full.exit_code == 0, full.output
        sent = server.stats().chat_received
    assert_each_once(out, [trace.id for trace in traces])
    assert read_manifest(out).complete and read_manifest(out).options["limit"] is None
    assert sent and not [key for key in paid if sent[key]], "an answer paid for in the trial was requested again"


def test_a_refused_annotate_run_rewrites_no_report(tmp_path):
    in_dir = write_segmented(tmp_path / "segmented", [[make_trace(n) for n in range(4)]])
    out = tmp_path / "annotated"
    assert invoke("annotate", str(in_dir), str(out), "--limit", "2").exit_code == 0
    before = snapshot(out)
    result = invoke("annotate", str(in_dir), str(out), "--limit", "1")
    assert result.exit_code == 1 and "limit was 2, now 1" in result.output
    assert snapshot(out) == before  # annotate_report.json included


def test_a_cache_folder_inside_a_new_output_folder_is_no_obstacle(tmp_path):
    in_dir = write_segmented(tmp_path / "segmented", [[make_trace(n) for n in range(2)]])
    out = tmp_path / "annotated"
    with OpenAIStandIn(Faults(), responder=responder) as server:
        result = annotate(in_dir, out, server, "--cache-dir", str(out / "answers"))
    assert result.exit_code == 0, result.output
    assert read_manifest(out).complete and (out / "answers" / "llm_cache.sqlite").exists()
