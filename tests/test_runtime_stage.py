"""The resumable stage runner: rows, quarantine and manifest; crashes, resumes, shards and worker pools."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from openmementos.runtime.executors import LocalExecutor
from openmementos.runtime.manifest import StageError, iter_stage, read_manifest
from openmementos.runtime.selection import ShardSelection
from openmementos.runtime.shardio import read_quarantine
from openmementos.runtime.stage import Quarantined, ShardTask, Stage, input_shards
from openmementos.schema import Record


class Number(Record):
    id: str
    value: int


def square_odds(task: ShardTask) -> object:
    """Squares the numbers of a shard; even ones are quarantined. A marker file makes it crash once."""
    for value in task.source:
        crash = Path(os.environ.get("CRASH_AT", "/nonexistent"))
        if value == 7 and crash.exists():
            crash.unlink()
            raise RuntimeError("simulated crash")
        if value % 2:
            yield Number(id=str(value), value=value * value)
        else:
            yield Quarantined(id=str(value), reason="even", detail=f"{value} is even", record={"value": value})


TASKS = [ShardTask(index=i, name=f"part-{i:05d}", source=range(i * 5, i * 5 + 5)) for i in range(4)]


def stage(out: Path, **options) -> Stage:
    return Stage("square", out, Number, square_odds, options={"k": 1, **options})


def read_all(out: Path) -> list[int]:
    return [r.value for r in iter_stage(out, Number)]


def test_stage_writes_rows_quarantine_and_manifest(tmp_path):
    manifest = stage(tmp_path).run(TASKS)
    assert manifest.complete and manifest.rows == 10 and manifest.quarantined == 10
    assert manifest.reasons() == {"even": 10}
    assert read_all(tmp_path) == [v * v for v in range(20) if v % 2]
    quarantined = list(read_quarantine(tmp_path))
    assert sorted(int(q.id) for q in quarantined) == list(range(0, 20, 2))
    assert json.loads(quarantined[0].record) == {"value": 0} and quarantined[0].stage == "square"


def test_crash_then_resume_equals_a_clean_run(tmp_path, monkeypatch):
    marker = tmp_path / "crash"
    marker.touch()
    monkeypatch.setenv("CRASH_AT", str(marker))
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated crash"):
        stage(out).run(TASKS)
    partial = read_manifest(out)
    assert not partial.complete and list(partial.done) == ["part-00000"]
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))  # no half-written file left behind
    with pytest.raises(StageError, match="unfinished `square` run: 3 of 4 shards"):
        input_shards(out, ShardSelection(), reader="cube", expects="square")
    assert stage(out).run(TASKS).complete
    clean = tmp_path / "clean"
    stage(clean).run(TASKS)
    assert read_all(out) == read_all(clean)


def test_sharded_runs_union_equals_unsharded_and_parallel(tmp_path):
    sharded = tmp_path / "sharded"
    first = stage(sharded).run(TASKS, ShardSelection.parse("0/2"))
    assert not first.complete
    assert stage(sharded).run(TASKS, ShardSelection.parse("1/2")).complete
    parallel = tmp_path / "parallel"
    assert stage(parallel).run(TASKS, executor=LocalExecutor(workers=2)).complete
    assert read_all(sharded) == read_all(parallel) == [v * v for v in range(20) if v % 2]


def test_resuming_with_other_options_is_refused(tmp_path):
    stage(tmp_path).run(TASKS[:1])
    with pytest.raises(StageError, match="other options"):
        stage(tmp_path, k=2).run(TASKS[:1])


@pytest.mark.parametrize("text", ["2/2", "a/b", "1", "0/0"])
def test_bad_shard_selection(text):
    with pytest.raises(ValueError, match="--shard"):
        ShardSelection.parse(text)


def test_a_rerun_removes_the_manifest_a_dead_writer_left_half_written_but_not_a_live_ones(tmp_path):
    out = tmp_path / "out"
    stage(out).run(TASKS[:1])
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    host = socket.gethostname()
    killed = out / f".manifest.json.{host}.{int(dead.stdout)}.tmp"  # that process has exited
    live = out / f".manifest.json.{host}.{os.getppid()}.tmp"  # a process still running (our parent)
    elsewhere = out / f".manifest.json.other-host.{int(dead.stdout)}.tmp"  # a --shard run on another machine
    for path in (killed, live, elsewhere):
        path.write_text("{")
    stage(out).run(TASKS[:1])
    assert not killed.exists() and live.exists() and elsewhere.exists()
