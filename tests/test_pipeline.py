"""`openmementos run`: pipeline files are checked before anything runs; the demo pipeline runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from support.annotated_traces import make_trace, write_stage
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.commands.adapter import flag_of
from openmementos.download.request import DownloadRequest
from openmementos.pipeline import PipelineError, load_pipeline, run_pipeline
from openmementos.runtime.manifest import read_manifest
from openmementos.segment.request import SegmentRequest

ROOT = Path(__file__).resolve().parents[1]
WIDE = {"COLUMNS": "250"}


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("name: x\nworkdir: w\nstages:\n  polish: {}\n", "unknown stage 'polish'"),
        ("name: x\nworkdir: w\nstages:\n  annotate: {in_dir: a}\n  segment: {}\n", "order they run"),
        ("name: x\nstages:\n  download: {sample: true}\n", "workdir: Field required"),
        ("name: x\nworkdir: w\nstages:\n  download: {sample: yes, colour: red}\n", "colour: not an option"),
        ("name: x\nworkdir: w\nstages:\n  segment: {in_dir: a, lambda: high}\n", "lambda: Input should be a valid"),
        ("name: x\nworkdir: w\nstages:\n  segment: {in_dir: a, min_block_tokens: -5}\n", "greater than or equal to 0"),
        ("name: x\nworkdir: w\nstages:\n  segment: {}\n", "the first stage needs in_dir"),
        ("name: x\nworkdir: w\nstages:\n  annotate: {in_dir: a, api_key: sk-123}\n", "set $OPENAI_API_KEY"),
        ("name: x\nworkdir: w\nstages:\n  publish: {in_dir: a, token: hf_123}\n", "set $HF_TOKEN"),
        ("name: x\nworkdir: w\nstages: [download\n", "not valid YAML"),
    ],
)
def test_bad_pipeline_files_get_clear_errors(tmp_path, body, message):
    path = write(tmp_path / "p.yaml", body)
    with pytest.raises(PipelineError) as error:
        load_pipeline(path)
    assert message in str(error.value)
    assert "sk-123" not in str(error.value) and "hf_123" not in str(error.value)


@pytest.mark.parametrize("shipped", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pipelines_are_valid(shipped):
    result = CliRunner().invoke(app, ["run", str(shipped), "--check"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.output.splitlines() if not line.startswith(" ")] == [
        "download", "segment", "annotate", "validate", "stats", "publish", "secrets"
    ]  # fmt: skip


def test_check_prints_the_cost_estimate_and_the_secrets_without_their_values(tmp_path):
    from support.annotate_script import segmented_sample
    from support.annotate_script import write_segmented as write_segment_folder

    segmented = write_segment_folder(tmp_path / "segmented", [segmented_sample()])
    path = write(
        tmp_path / "p.yaml",
        f"""
        name: x
        workdir: w
        stages:
          annotate: {{in_dir: {segmented}, model: gpt-4.1-mini, judge: per-trace}}
          validate: {{}}
          publish: {{repo_id: me/rebuilt}}
        """,
    )
    env = {**WIDE, "OPENAI_API_KEY": "sk-secret-value-1234", "HF_TOKEN": ""}
    result = CliRunner().invoke(app, ["run", str(path), "--check"], env=env)
    assert result.exit_code == 0, result.output
    output = result.output
    assert "  estimate for 30 traces with gpt-4.1-mini, judge per-trace" in output
    assert "  whole input: " in output and "cached prefixes" in output
    assert "  $OPENAI_API_KEY (required by annotate): set" in output
    assert "  $HF_TOKEN (required by publish): NOT SET" in output
    assert "sk-secret-value-1234" not in output
    assert not (tmp_path / "w").exists(), "--check writes nothing"

    local = write(tmp_path / "q.yaml", f"name: x\nworkdir: w\nstages:\n  annotate: {{in_dir: {tmp_path / 'none'}}}\n")
    result = CliRunner().invoke(app, ["run", str(local), "--check"], env={**WIDE, "OPENAI_API_KEY": ""})
    assert result.exit_code == 0, result.output
    assert "cost: none (the offline extractive annotator" in result.output and "secrets: none" in result.output


def test_check_estimates_annotate_from_the_download_folder_before_segment_has_run(tmp_path):
    path = write(
        tmp_path / "p.yaml",
        """
        name: x
        workdir: w
        stages:
          download: {sample: true}
          segment: {}
          annotate: {model: gpt-4.1-mini, judge: per-trace}
        """,
    )

    def check() -> str:
        result = CliRunner().invoke(app, ["run", str(path), "--check"], env={**WIDE, "OPENAI_API_KEY": ""})
        assert result.exit_code == 0, result.output
        return result.output

    def whole_input(output: str) -> str:
        return next(line for line in output.splitlines() if line.startswith("  whole input: "))

    assert f"cost estimate: once {tmp_path / 'w' / 'download'} holds download's output" in check()
    assert CliRunner().invoke(app, ["run", str(path), "--until", "download"]).exit_code == 0
    before_segment = check()
    assert f"blocks from cutting {tmp_path / 'w' / 'download'} in memory with the heuristic scorer" in before_segment
    assert not (tmp_path / "w" / "segment").exists(), "--check writes nothing"
    assert CliRunner().invoke(app, ["run", str(path), "--until", "segment"]).exit_code == 0
    after_segment = check()
    assert "in memory" not in after_segment
    assert whole_input(before_segment) == whole_input(after_segment)  # the same blocks, cut here or by segment


def test_cli_reports_errors_without_running_anything(tmp_path):
    path = write(tmp_path / "p.yaml", "name: x\nworkdir: w\nstages:\n  segment: {in_dir: a, scorer: magic}\n")
    result = CliRunner().invoke(app, ["run", str(path)], env=WIDE)
    assert result.exit_code == 1
    assert "stages.segment: scorer: Input should be 'heuristic' or 'llm'" in result.output
    assert not (tmp_path / "w").exists()


def test_option_keys_are_the_cli_option_names():
    assert SegmentRequest.key_of("lam") == "lambda"
    assert flag_of("lam", SegmentRequest.model_fields["lam"]) == "--lambda"
    assert DownloadRequest.key_of("set_") == "set"
    assert flag_of("set_", DownloadRequest.model_fields["set_"]) == "--set"
    assert SegmentRequest.key_of("min_block_tokens") == "min_block_tokens"
    assert flag_of("min_block_tokens", SegmentRequest.model_fields["min_block_tokens"]) == "--min-block-tokens"


def test_stages_are_chained_and_publish_gets_the_lineage(tmp_path):
    path = write(
        tmp_path / "p.yaml",
        f"""\
        name: chained
        workdir: {tmp_path / "w"}
        stages:
          download: {{sample: true}}
          segment: {{lambda: 0.3}}
          annotate: {{}}
          validate: {{out_dir: {tmp_path / "checked"}}}
          stats: {{}}
          publish: {{to: {tmp_path / "pub"}}}
        """,
    )
    calls = {call.name: call for call in load_pipeline(path)}
    work = tmp_path / "w"
    assert calls["segment"].request.in_dir == work / "download"
    assert calls["segment"].request.lam == 0.3
    assert calls["validate"].request.in_dir == work / "annotate"
    assert calls["stats"].request.in_dir == tmp_path / "checked"
    assert calls["stats"].request.plots == work / "stats"
    assert calls["publish"].request.in_dir == tmp_path / "checked"
    assert calls["publish"].request.lineage == [work / "download", work / "segment", work / "annotate"]


def test_a_pipeline_from_annotated_traces_validates_and_publishes(tmp_path):
    write_stage(tmp_path / "annotate", [make_trace(n) for n in range(5)])
    path = write(
        tmp_path / "p.yaml",
        f"""\
        name: finish
        workdir: {tmp_path / "w"}
        stages:
          validate: {{in_dir: {tmp_path / "annotate"}, min_judge_score: 7}}
          publish: {{to: {tmp_path / "pub"}, pretty_name: Finished}}
        """,
    )
    lines = []
    run_pipeline(load_pipeline(path), echo=lines.append)
    assert lines[0].startswith("== [1/2] validate:") and lines[1].startswith("== [2/2] publish:")
    assert read_manifest(tmp_path / "w" / "validate").options["min_judge_score"] == 7
    assert "# Finished" in (tmp_path / "pub" / "README.md").read_text()
    with pytest.raises(PipelineError, match="no stage 'segment'"):
        run_pipeline(load_pipeline(path), start="segment")


def test_a_failing_stage_stops_the_pipeline(tmp_path):
    write_stage(tmp_path / "annotate", [make_trace(1)], shards=1, stage="annotate")
    path = write(
        tmp_path / "p.yaml",
        f"""\
        name: no-validate
        workdir: {tmp_path / "w"}
        stages:
          publish: {{in_dir: {tmp_path / "annotate"}, to: {tmp_path / "pub"}}}
        """,
    )
    with pytest.raises(PipelineError, match=r"stage publish: .* only validated traces are published"):
        run_pipeline(load_pipeline(path), echo=lambda _: None)
    assert not (tmp_path / "pub").exists()


SHOW_SCRIPT = """
import json, sys
import datasets
from openmementos.demo_show import main
from openmementos.schema import PUBLIC_CONFIGS, features
main([sys.argv[1]])
loaded = {c: datasets.load_dataset(sys.argv[1], c, split="train") for c in PUBLIC_CONFIGS}
print(json.dumps({c: [d.num_rows, d.features == features(PUBLIC_CONFIGS[c])] for c, d in loaded.items()}))
"""


def test_demo_pipeline_end_to_end(demo_run):
    """pipelines/demo.yaml, moved under tmp: resumes after a partial run, publishes a loadable dataset."""
    assert demo_run.partial.exit_code == 0, demo_run.partial.output
    assert "segment" in demo_run.folders_after_partial and "annotate" not in demo_run.folders_after_partial
    done = demo_run.full
    assert done.exit_code == 0, done.output
    assert "== [6/6] publish" in done.output and "finished" in done.output

    published, workdir, runner = demo_run.published, demo_run.workdir, CliRunner()
    card = (published / "README.md").read_text()
    assert "## Statistics" in card and "peak-KV ratio (mean)" in card and "(2.5x)" in card
    assert "![kv ratio](plots/kv_ratio.png)" in card and (published / "plots" / "kv_ratio.png").stat().st_size > 1000
    assert "**Memento writer (annotator):** `extractive`" in card and "| `download` |" in card
    report = json.loads(demo_run.report.read_text())
    traces = report["passed"]
    assert traces >= 20 and report["traces"] == read_manifest(workdir / "annotate").rows

    stats = runner.invoke(app, ["stats", str(workdir / "validate")], env=WIDE)
    assert stats.exit_code == 0, stats.output
    assert "peak-KV ratio (mean)" in stats.output and "(2.5x)" in stats.output
    assert "the paper reports ~2.5x" in stats.output

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "COLUMNS": "120"}
    shown = subprocess.run(
        [sys.executable, "-c", SHOW_SCRIPT, str(published)], env=env, capture_output=True, text=True, timeout=300
    )
    assert shown.returncode == 0, shown.stderr
    assert "memento 1" in shown.stdout and "block 1 (sentences 0-" in shown.stdout
    assert json.loads(shown.stdout.strip().splitlines()[-1]) == {"default": [traces, True], "full": [traces, True]}

    before = {p: p.stat().st_mtime_ns for p in published.rglob("*") if p.is_file()}
    again = runner.invoke(app, ["run", str(demo_run.pipeline)], env=WIDE)
    assert again.exit_code == 0, again.output
    assert "already up to date" in again.output
    assert {p: p.stat().st_mtime_ns for p in published.rglob("*") if p.is_file()} == before


def test_the_library_runs_a_pipeline_exactly_as_the_cli_does(demo_run, tmp_path):
    """`run_pipeline` (no Typer) over the demo pipeline writes the same shards and configs as `openmementos run`."""
    spec = yaml.safe_load(demo_run.pipeline.read_text())
    spec["workdir"] = str(tmp_path / "w")
    spec["stages"]["validate"]["report"] = str(tmp_path / "report.json")
    spec["stages"]["publish"]["to"] = str(tmp_path / "published")
    path = tmp_path / "library.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    results = run_pipeline(load_pipeline(path), echo=lambda _: None)
    assert [type(result).__name__ for result in results] == [
        "DownloadResult", "SegmentResult", "AnnotateResult", "ValidateResult", "StatsResult", "PublishResult"
    ]  # fmt: skip
    for stage in ("download", "segment", "annotate", "validate"):
        cli, library = demo_run.workdir / stage, tmp_path / "w" / stage
        assert [p.read_bytes() for p in sorted(cli.glob("part-*.parquet"))] == [
            p.read_bytes() for p in sorted(library.glob("part-*.parquet"))
        ], stage
    published = sorted(p.relative_to(demo_run.published) for p in demo_run.published.rglob("*.parquet"))
    assert published and all(
        (demo_run.published / name).read_bytes() == (tmp_path / "published" / name).read_bytes() for name in published
    )


def every_path(request: object) -> list[Path]:
    values = [getattr(request, name) for name in type(request).model_fields]
    return [p for value in values for p in (value if isinstance(value, list) else [value]) if isinstance(p, Path)]


def test_a_copied_pipeline_writes_only_under_its_own_workdir_wherever_it_runs_from(tmp_path, monkeypatch):
    spec = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    spec["workdir"] = "work"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "demo.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    calls = {call.name: call for call in load_pipeline(Path("../mine/demo.yaml"))}
    work = (tmp_path / "mine" / "work").resolve()
    assert calls["validate"].request.report.resolve() == work / "validate_report.json"
    assert calls["publish"].request.to.resolve() == work / "published"
    assert calls["stats"].request.plots.resolve() == work / "stats"
    assert all(p.resolve().is_relative_to(work) for call in calls.values() for p in every_path(call.request))

    result = CliRunner().invoke(app, ["run", "../mine/demo.yaml", "--until", "segment"], env=WIDE)
    assert result.exit_code == 0, result.output
    assert list(Path().iterdir()) == []  # nothing in the folder it ran from
    assert sorted(p.name for p in work.iterdir()) == ["download", "segment"]


def test_the_shipped_demo_writes_under_out_demo_wherever_it_runs_from(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = {call.name: call for call in load_pipeline(ROOT / "pipelines" / "demo.yaml")}
    assert calls["download"].request.out_dir == ROOT / "out" / "demo" / "download"
    assert calls["publish"].request.to == ROOT / "out" / "demo" / "published"


def test_read_paths_are_relative_to_the_pipeline_file_and_written_ones_to_the_workdir(tmp_path):
    (tmp_path / "recipes").mkdir()
    path = write(
        tmp_path / "recipes" / "p.yaml",
        """\
        name: mine
        workdir: ../runs/mine
        stages:
          download: {input: data/traces.jsonl}
          segment: {cache_dir: shared-cache}
          validate: {report: reports/validate.json}
          publish: {to: published, lineage: [../runs/old/download]}
        """,
    )
    calls = {call.name: call for call in load_pipeline(path)}
    recipes, work = tmp_path / "recipes", tmp_path / "runs" / "mine"
    assert calls["download"].request.input == recipes / "data" / "traces.jsonl"
    assert calls["segment"].request.cache_dir == work / "shared-cache"
    assert calls["validate"].request.report == work / "reports" / "validate.json"
    assert calls["publish"].request.to == work / "published"
    assert calls["publish"].request.lineage == [tmp_path / "runs" / "old" / "download"]
