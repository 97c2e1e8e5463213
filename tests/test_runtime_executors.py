"""The executor seam: a Ray cluster (a local one here) writes what the local executor writes, row for row,
and a killed Ray run resumes by the same done markers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.ot3_rows import write_ot3_parquet

from openmementos.annotate import AnnotateRequest, run_annotate
from openmementos.download import DownloadRequest, run_download
from openmementos.runtime.manifest import read_manifest
from openmementos.runtime.shardio import read_quarantine
from openmementos.segment import SegmentRequest, run_segment
from openmementos.validate import ValidateRequest, run_validate

ray = pytest.importorskip("ray")

CLI = [sys.executable, "-c", "from openmementos.cli import app; app(prog_name='openmementos')"]


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One local Ray cluster for the module (the executor leaves a cluster it did not start running)."""
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("executors")
    write_ot3_parquet(root / "ot3", 240, 6)
    run_download(DownloadRequest(out_dir=root / "download", input=root / "ot3", workers=1))
    return root / "download"


def folder_contents(folder: Path) -> tuple[list[list[dict]], list[object], str]:
    """Every output shard's rows, every quarantine record and the options hash of a stage folder."""
    manifest = read_manifest(folder)
    rows = [pq.read_table(folder / f"{name}.parquet").to_pylist() for name in manifest.shards]
    return rows, list(read_quarantine(folder)), manifest.options_hash


def test_ray_writes_what_the_local_executor_writes(local_ray: None, downloaded: Path, tmp_path: Path) -> None:
    ray_download = run_download(
        DownloadRequest(out_dir=tmp_path / "download", input=downloaded.parent / "ot3", executor="ray")
    )
    assert ray_download.manifest.complete
    assert folder_contents(tmp_path / "download") == folder_contents(downloaded)

    local = run_segment(SegmentRequest(in_dir=downloaded, out_dir=tmp_path / "local", workers=2))
    on_ray = run_segment(SegmentRequest(in_dir=downloaded, out_dir=tmp_path / "ray", executor="ray", workers=2))
    assert local.manifest.complete and on_ray.manifest.complete and local.manifest.rows > 100
    assert folder_contents(tmp_path / "ray") == folder_contents(tmp_path / "local")

    annotated_dir = tmp_path / "annotated"
    annotated = run_annotate(AnnotateRequest(in_dir=tmp_path / "local", out_dir=annotated_dir)).manifest
    validated = [
        run_validate(ValidateRequest(in_dir=annotated_dir, out_dir=tmp_path / f"checked-{kind}", executor=kind))
        for kind in ("local", "ray")
    ]
    assert [v.manifest.rows + v.manifest.quarantined for v in validated] == [annotated.rows] * 2
    assert folder_contents(tmp_path / "checked-ray") == folder_contents(tmp_path / "checked-local")


def test_ray_address_needs_the_ray_executor(downloaded: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--ray-address needs --executor ray"):
        run_segment(SegmentRequest(in_dir=downloaded, out_dir=tmp_path / "x", ray_address="auto"))


def test_a_killed_ray_run_resumes(downloaded: Path, tmp_path: Path) -> None:
    out = tmp_path / "segment"
    command = [*CLI, "segment", str(downloaded), str(out), "--executor", "ray", "--workers", "1"]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    # Its own session, so the kill takes the local cluster the run started with it.
    process = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(out.glob(".done/part-*.json")):  # one shard of six is finished: kill it mid-run
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the Ray run finished no shard"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(30)
    assert not read_manifest(out).complete
    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    run_segment(SegmentRequest(in_dir=downloaded, out_dir=tmp_path / "local"))
    assert folder_contents(out) == folder_contents(tmp_path / "local")
