"""publish: to the loopback Hub stand-in and to a folder, read back with `datasets`, idempotent, validated only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.annotated_traces import make_trace, write_stage
from support.hub_standin import HubStandin
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.publish import PublishError, PublishRequest, PublishResult, run_publish
from openmementos.publish.build import source_license, traced_lineage
from openmementos.publish.card import StageRecord
from openmementos.validate import ValidateRequest, run_validate

TOKEN = "secret-test-token-123"
REPO = "org/mementos"
CLI = ["-c", "from openmementos.cli import app; app()"]

LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import datasets
    from openmementos.schema import PUBLIC_CONFIGS, features

    report = {}
    for config, model in PUBLIC_CONFIGS.items():
        loaded = datasets.load_dataset(sys.argv[1], config, split="train")
        report[config] = {
            "features_match": loaded.features == features(model),
            "features": str(loaded.features),
            "rows": loaded.to_list(),
        }
    print(json.dumps(report))
    """
)


def publish(in_dir: Path, **options: object) -> PublishResult:
    return run_publish(PublishRequest(in_dir=in_dir, **options))


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("publish")
    traces = [make_trace(n, judged=n % 2 == 0) for n in range(10)]
    write_stage(root / "annotate", traces)
    run_validate(ValidateRequest(in_dir=root / "annotate", out_dir=root / "validate"))
    return root / "validate"


def expected_rows(config: str) -> list[dict]:
    """The published rows: every trace once, in validated order (shard 0's rows, then shard 1's)."""
    traces = [make_trace(n, judged=n % 2 == 0) for n in range(10)]
    ordered = traces[0::2] + traces[1::2]  # write_stage deals the traces round-robin into two shards
    if config == "default":
        return [t.to_default_row().model_dump() for t in ordered]
    return [t.to_full_row().model_dump() for t in ordered]


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def load(target: str, env: dict[str, str]) -> dict:
    return json.loads(run(["-c", LOAD_SCRIPT, target], env).stdout.strip().splitlines()[-1])


def offline_env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


def test_publish_to_the_hub_loads_back_and_republishing_makes_no_commit(validated, tmp_path):
    with HubStandin(token=TOKEN) as hub:
        env = {**os.environ, **hub.client_env(tmp_path / "hf"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
        publish_args = [*CLI, "publish", str(validated), "--repo-id", REPO, "--rows-per-shard", "3"]
        first = run(publish_args, env)
        commits = hub.commits(REPO)
        assert [c.title for c in commits] == ["Publish 10 traces (default + full configs)", "initial commit"]
        files = hub.list_files(REPO)
        assert [f for f in files if f.startswith("data/")] == [f"data/train-0000{i}-of-00004.parquet" for i in range(4)]
        assert [f for f in files if f.startswith("full/")] == [f"full/train-0000{i}-of-00004.parquet" for i in range(4)]
        assert {"README.md", "plots/kv_ratio.png", "plots/compression.png"} <= set(files)
        card = hub.read_file(REPO, "README.md").decode()
        assert "peak-KV ratio" in card and "![kv ratio](plots/kv_ratio.png)" in card
        assert f'load_dataset("{REPO}", "full", split="train")' in card

        loaded = load(REPO, env)
        for config in ("default", "full"):
            assert loaded[config]["features_match"], loaded[config]["features"]
            assert loaded[config]["rows"] == expected_rows(config)

        commits_before = hub.request_counts.get("POST commit", 0)
        second = run(publish_args, env)
        assert hub.request_counts.get("POST commit", 0) == commits_before  # identical input: no commit at all
        assert len(hub.commits(REPO)) == 2
        assert "already up to date" in second.stdout

        # Fewer, larger shards: one commit adds the new files and removes the old ones together.
        run([*CLI, "publish", str(validated), "--repo-id", REPO, "--rows-per-shard", "5"], env)
        assert len(hub.commits(REPO)) == 3
        assert [f for f in hub.list_files(REPO) if f.startswith("full/")] == [
            "full/train-00000-of-00002.parquet",
            "full/train-00001-of-00002.parquet",
        ]
        assert load(REPO, env)["full"]["rows"] == expected_rows("full")

        everything = first.stdout + first.stderr + second.stdout + second.stderr + card
        assert TOKEN not in everything
        assert TOKEN not in repr(hub.request_log)
        assert hub.errors == []


def test_private_flag_never_publishes_into_a_public_repo(validated, monkeypatch):
    from huggingface_hub import constants

    with HubStandin(token=TOKEN) as hub:
        # In-process client: set what huggingface_hub would have read from HF_ENDPOINT & co at import.
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        hub.create_repo("org/public")
        with pytest.raises(PublishError, match="is public") as refused:
            publish(validated, repo_id="org/public", private=True, token=TOKEN)
        assert TOKEN not in str(refused.value)
        assert [c.title for c in hub.commits("org/public")] == ["initial commit"]
        with pytest.raises(PublishError, match=r"failed: .*401") as unauthorized:
            publish(validated, repo_id="org/other", token="wrong-token")
        assert "wrong-token" not in str(unauthorized.value)


def test_publish_to_a_folder_is_atomic_idempotent_and_loadable(validated, tmp_path):
    target = tmp_path / "published"
    first = publish(validated, to=target, pretty_name="Test mementos", rows_per_shard=4)
    assert first.changed and first.build.traces == 10
    snapshot = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    mtimes = {p: p.stat().st_mtime_ns for p in snapshot}
    again = publish(validated, to=target, pretty_name="Test mementos", rows_per_shard=4)
    assert not again.changed
    assert {p: p.stat().st_mtime_ns for p in snapshot} == mtimes  # untouched
    assert not list(tmp_path.glob(".published.*"))  # no staging left behind

    card = (target / "README.md").read_text()
    assert card.startswith("---\n") and "# Test mementos" in card
    assert "pretty_name: Test mementos" in card and "size_categories:\n- n<1K" in card
    assert "- config_name: full" in card and "path: full/train-*" in card
    assert "**Memento writer (annotator):** `extractive`" in card
    assert "all 10 traces passed" in card

    loaded = load(str(target), offline_env())
    assert loaded["default"]["features_match"] and loaded["full"]["features_match"]
    assert loaded["default"]["rows"] == expected_rows("default")


def test_only_validated_output_is_published(validated, tmp_path):
    with pytest.raises(PublishError, match="only validated traces are published"):
        publish(validated.parent / "annotate", to=tmp_path / "out")
    with pytest.raises(ValueError, match="exactly one target"):
        publish(validated)
    with pytest.raises(ValueError, match="ORG/NAME"):
        publish(validated, repo_id="no-namespace")
    assert not (tmp_path / "out").exists()


def test_a_folder_with_foreign_files_is_never_replaced(validated, tmp_path):
    target = tmp_path / "home"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    with pytest.raises(PublishError, match="did not write"):
        publish(validated, to=target)
    assert (target / "thesis.tex").read_text() == "precious"


def test_dry_run_changes_nothing_and_shows_the_plan(validated, tmp_path):
    result = CliRunner().invoke(
        app, ["publish", str(validated), "--to", str(tmp_path / "out"), "--dry-run"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert "full/train-00000-of-00001.parquet" in result.output and "nothing was written" in result.output
    assert "## Statistics" in result.output
    assert not (tmp_path / "out").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_published_shards_follow_validated_order_across_shards(tmp_path):
    write_stage(tmp_path / "annotate", [make_trace(n) for n in range(7)], shards=3)
    run_validate(ValidateRequest(in_dir=tmp_path / "annotate", out_dir=tmp_path / "validate"))
    result = publish(tmp_path / "validate", to=tmp_path / "out", rows_per_shard=3)
    assert [c.files for c in result.build.configs] == [3, 3]
    import pyarrow.parquet as pq

    problems = [
        row["problem"]
        for path in sorted((tmp_path / "out/data").glob("*.parquet"))
        for row in pq.read_table(path).to_pylist()
    ]
    order = [n for shard in range(3) for n in range(shard, 7, 3)]
    assert problems == [make_trace(n).problem for n in order]


def test_a_hand_run_publish_finds_its_recipe_and_licence_in_the_stage_folders(demo_run, tmp_path):
    """No --lineage, no --license: the validate folder's manifest leads to annotate, segment and download."""
    result = CliRunner().invoke(
        app, ["publish", str(demo_run.workdir / "validate"), "--to", str(tmp_path / "pub")], env={"COLUMNS": "250"}
    )
    assert result.exit_code == 0, result.output
    card = (tmp_path / "pub" / "README.md").read_text()
    assert "- **Source traces:** the sample of reasoning traces embedded in `openmementos`" in card
    assert [stage for stage in ("download", "segment", "annotate", "validate") if f"| `{stage}` |" in card] == [
        "download", "segment", "annotate", "validate"
    ]  # fmt: skip
    assert "\nlicense: mit\n" in card and "Released under `mit`." in card  # the sample's licence
    assert "[arXiv 2604.09852](https://arxiv.org/abs/2604.09852)" in card
    assert "[microsoft/OpenMementos](https://huggingface.co/datasets/microsoft/OpenMementos)" in card
    assert "@misc{kontonis2026memento" in card and "eprint        = {2604.09852}" in card
    assert traced_lineage(demo_run.workdir / "validate") == [
        demo_run.workdir / stage for stage in ("download", "segment", "annotate")
    ]


def test_without_a_recorded_source_the_licence_is_unknown_until_given(validated, tmp_path):
    unknown = publish(validated, to=tmp_path / "a").build.card
    assert "\nlicense: unknown\n" in unknown and "No licence is declared" in unknown
    assert "\nlicense: cc-by-4.0\n" in publish(validated, to=tmp_path / "b", license="cc-by-4.0").build.card


def test_the_licence_comes_from_what_download_recorded():
    hub = StageRecord("download", 1, 0, {}, {"input": {"kind": "hub", "license": "apache-2.0"}})
    assert source_license([hub]) == "apache-2.0"
    assert source_license([StageRecord("download", 1, 0, {}, {"input": {"kind": "local"}})]) == "unknown"
