"""`openmementos download` against the loopback Hub stand-in, through the real huggingface_hub client.

The CLI runs in subprocesses: huggingface_hub and datasets read HF_ENDPOINT and friends at import.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.hub_standin import HubStandin
from support.ot3_rows import expected_reason, ot3_row, write_ot3_parquet

from openmementos.runtime.manifest import iter_stage, read_manifest
from openmementos.runtime.shardio import read_quarantine
from openmementos.schema import SourceTrace

REPO = "synthetic/OpenThoughts3-mini"
ROWS, SHARDS = 900, 6
CLI = [sys.executable, "-c", "from openmementos.cli import app; app(prog_name='openmementos')"]
SELECT = ["--limit", "300", "--ratio", "math=0.5", "--ratio", "code=0.3", "--ratio", "science=0.2", "--seed", "3"]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ot3-repo")
    write_ot3_parquet(folder, ROWS, SHARDS, row_group_size=50)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# A mini OpenThoughts3\n")
    with HubStandin() as standin:
        standin.commit_sha = standin.seed_dataset(REPO, folder)
        yield standin
        assert standin.errors == []


@pytest.fixture(scope="module")
def env(hub, tmp_path_factory):
    return {**os.environ, **hub.client_env(tmp_path_factory.mktemp("hf")), "PYTHONUNBUFFERED": "1"}


def download(out: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    command = [*CLI, "download", str(out), "--dataset", REPO, *SELECT, *extra]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def uninterrupted(env, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    download(out, env, "--workers", "2")
    return out


def global_index(file: str, row: int) -> int:
    shard = int(re.search(r"train-(\d+)-of", file).group(1))
    return shard * ROWS // SHARDS + row


def output(out: Path) -> tuple[list[SourceTrace], list]:
    traces = list(iter_stage(out, SourceTrace))
    return traces, list(read_quarantine(out))


def test_hub_download_counts_filters_ratios_and_manifest(hub, uninterrupted):
    manifest = read_manifest(uninterrupted)
    assert manifest.complete and manifest.shards_total == SHARDS
    source = manifest.options["input"]
    assert (source["kind"], source["dataset"], source["revision"]) == ("hub", REPO, "main")
    assert source["commit"] == hub.commit_sha and len(source["files"]) == SHARDS
    assert source["license"] == "apache-2.0"  # from the dataset card: the default licence of a publish
    selection = manifest.options["selection"]
    assert selection["drawn"] == {"math": 150, "code": 90, "science": 60}
    assert selection["not_selected"] == ROWS - 300 - selection["unclassified"]

    traces, quarantined = output(uninterrupted)
    assert len(traces) + len(quarantined) == 300 + selection["unclassified"]  # rows without a domain pass on
    for record in quarantined:
        pointer = json.loads(record.record)
        assert record.reason == expected_reason(global_index(pointer["file"], pointer["row"]))
    assert manifest.reasons() == {r: sum(q.reason == r for q in quarantined) for r in {q.reason for q in quarantined}}
    assert {"unclosed_think", "cjk", "too_few_sentences", "empty_answer"} <= set(manifest.reasons())
    for trace in traces:
        i = int(re.match(r"Problem (\d+):", trace.problem).group(1))
        assert expected_reason(i) is None
        assert trace.assistant_text() == ot3_row(i)["conversations"][1]["value"]
    drawn_domains = [t.domain for t in traces] + [json.loads(q.record)["domain"] for q in quarantined]
    assert {d: drawn_domains.count(d) for d in ("math", "code", "science")} == selection["drawn"]
    assert sum(s.rows for s in manifest.done.values()) == len(traces)


def test_killed_run_resumes_to_the_same_output(hub, env, uninterrupted, tmp_path):
    out = tmp_path / "killed"
    command = [*CLI, "download", str(out), "--dataset", REPO, *SELECT, "--workers", "1"]
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    first_done = out / ".done" / "part-00000.json"
    deadline = time.monotonic() + 120
    while not first_done.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)  # the whole process group, as a crash would
    process.wait()
    partial = read_manifest(out)
    assert first_done.exists() and not partial.complete, "the run ended before it could be killed"

    hub.reset_counts()
    download(out, env, "--workers", "1")
    # The finished shard is not downloaded again (only its parquet footer is probed for the column names),
    # and the selection plan comes from the manifest: no metadata pass reading a range of every shard.
    # (The shard that was downloading when the run died may resume its partial file with a range request.)
    fetched = [r for r in hub.request_log if r.route == "resolve" and r.method == "GET"]
    assert not [r for r in fetched if "train-00000-of" in r.path and r.status == 200]
    assert len({r.path for r in fetched if r.status == 206 and "train-00000-of" not in r.path}) <= 1
    assert read_manifest(out).complete
    assert output(out) == output(uninterrupted)
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def test_files_already_fetched_are_planned_from_the_cache(hub, env, uninterrupted, tmp_path):
    hub.reset_counts()
    download(tmp_path / "again", env, "--workers", "1")
    # every shard is in the local cache: the pre-pass scans them there, no range request reads the Hub
    assert not [r for r in hub.request_log if r.route == "resolve" and r.status == 206]
    again = read_manifest(tmp_path / "again")
    assert again.options["selection"] == read_manifest(uninterrupted).options["selection"]
    assert output(tmp_path / "again") == output(uninterrupted)


def test_sharded_runs_union_equals_the_unsharded_run(env, uninterrupted, tmp_path):
    out = tmp_path / "sharded"
    download(out, env, "--shard", "0/2")
    assert not read_manifest(out).complete
    result = download(out, env, "--shard", "1/2")
    assert read_manifest(out).complete and "complete" in result.stdout
    assert output(out) == output(uninterrupted)
    assert read_manifest(out).options_hash == read_manifest(uninterrupted).options_hash


def test_unknown_dataset_and_revision_are_clear_errors(env, tmp_path):
    for extra, message in ((["--dataset", "nobody/nothing"], "was not found"), (["--revision", "v9"], "no revision")):
        command = [
            *CLI,
            "download",
            str(tmp_path / "x"),
            *(["--dataset", REPO] if "--revision" in extra else []),
            *extra,
        ]
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr
