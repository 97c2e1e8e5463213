"""One unreadable input file never stops `download`: it is quarantined by name, counted, and left alone on rerun."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.ot3_rows import expected_reason, write_ot3_parquet
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.download import DownloadRequest, run_download
from openmementos.runtime.manifest import iter_stage, read_manifest
from openmementos.runtime.shardio import read_quarantine
from openmementos.schema import SourceTrace

ROWS, SHARDS = 300, 3
WIDE = {"COLUMNS": "250"}
runner = CliRunner()


def traces(out: Path) -> list[SourceTrace]:
    return list(iter_stage(out, SourceTrace))


def download(out: Path, *args: str) -> object:
    return runner.invoke(app, ["download", str(out), *args], env=WIDE)


def reader_error(path: Path) -> str:
    """What pyarrow itself says when it reads the file batch by batch (the reason the manifest must carry)."""
    with pytest.raises((OSError, ValueError)) as raised:
        for _ in pq.ParquetFile(path).iter_batches():
            pass
    return str(raised.value).splitlines()[0]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    """Three snappy-compressed parquet files of the synthetic corpus (100 rows each)."""
    folder = tmp_path / "corpus"
    write_ot3_parquet(folder, ROWS, SHARDS, row_group_size=50)
    return folder


def shard_file(corpus: Path, index: int) -> Path:
    return corpus / "data" / f"train-{index:05d}-of-{SHARDS:05d}.parquet"


def corrupt(path: Path) -> None:
    """Zero 4 kB in the middle of the file: the footer still opens, the pages no longer decode."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = bytes(4096)
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def good_rows(shards: list[int]) -> int:
    per_shard = ROWS // SHARDS
    return sum(1 for s in shards for i in range(s * per_shard, (s + 1) * per_shard) if expected_reason(i) is None)


@pytest.mark.parametrize("damage", [corrupt, truncate], ids=["corrupt", "truncated"])
def test_an_unreadable_file_between_two_good_ones_is_quarantined_and_the_run_goes_on(corpus, tmp_path, damage):
    bad = shard_file(corpus, 1)
    damage(bad)
    reason = reader_error(bad)
    out = tmp_path / "out"
    result = download(out, "--input", str(corpus))
    assert result.exit_code == 0, result.output
    label = "data/train-00001-of-00003.parquet"
    assert f"warning: 1 input file could not be read and was quarantined whole: {label} ({reason})" in result.output
    assert "--retry-unreadable" in result.output and "complete:" in result.output
    manifest = read_manifest(out)
    assert manifest.complete and manifest.rows == good_rows([0, 2])
    assert [(u.source, u.reason) for u in manifest.unreadable] == [(label, reason)]
    assert manifest.done["part-00001"].rows == 0 and manifest.reasons()["unreadable_file"] == 1
    quarantined = [q for q in read_quarantine(out) if q.reason == "unreadable_file"]
    assert [(q.id, q.detail) for q in quarantined] == [(label, reason)]
    assert pq.ParquetFile(out / "part-00001.parquet").metadata.num_rows == 0  # readable, empty shard

    shutil.copy(shard_file(corpus, 0), bad)  # the file is fixed: a plain rerun still leaves it out
    again = download(out, "--input", str(corpus))
    assert again.exit_code == 0 and "could not be read" in again.output
    assert read_manifest(out).done["part-00001"] == manifest.done["part-00001"]

    retried = download(out, "--input", str(corpus), "--retry-unreadable")
    assert retried.exit_code == 0 and "could not be read" not in retried.output, retried.output
    fixed = read_manifest(out)
    assert fixed.unreadable == [] and fixed.rows == good_rows([0, 0, 2])
    assert "unreadable_file" not in fixed.reasons()


def test_files_in_another_format_than_their_name_are_quarantined(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    write_ot3_parquet(tmp_path / "ot3", 20, 1)
    shutil.copy(tmp_path / "ot3" / "data" / "train-00000-of-00001.parquet", folder / "a.parquet")
    (folder / "b.parquet").write_text('{"this": "is json"}\n')
    (folder / "c.jsonl").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary")
    manifest = run_download(DownloadRequest(out_dir=tmp_path / "out", input=folder, workers=1)).manifest
    assert manifest.complete and manifest.rows == good_rows_of(20)
    assert [u.source for u in manifest.unreadable] == ["b.parquet", "c.jsonl"]
    assert "magic bytes" in manifest.unreadable[0].reason and "utf-8" in manifest.unreadable[1].reason


def good_rows_of(rows: int) -> int:
    return sum(1 for i in range(rows) if expected_reason(i) is None)


def test_a_stratified_selection_draws_from_the_readable_files(corpus, tmp_path):
    readable = tmp_path / "readable"
    (readable / "data").mkdir(parents=True)
    for index in (0, 1):
        shutil.copy(shard_file(corpus, index), readable / "data")
    truncate(shard_file(corpus, 2))
    selection = ("--limit", "60", "--seed", "7")
    result = download(tmp_path / "out", "--input", str(corpus), *selection)
    assert result.exit_code == 0, result.output
    manifest = read_manifest(tmp_path / "out")
    assert manifest.complete and [u.source for u in manifest.unreadable] == ["data/train-00002-of-00003.parquet"]
    assert manifest.options["selection"]["file_rows"] == [100, 100, 0]
    assert download(tmp_path / "clean", "--input", str(readable), *selection).exit_code == 0
    assert traces(tmp_path / "out") == traces(tmp_path / "clean")  # the same draw as without the bad file


def test_no_readable_input_and_no_rows_are_one_line_errors_that_create_nothing(corpus, tmp_path):
    for index in range(SHARDS):
        truncate(shard_file(corpus, index))
    result = download(tmp_path / "none", "--input", str(corpus))
    assert result.exit_code == 1 and result.output.startswith("error: no input file could be read (data/train-00000")
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "none").exists()

    (tmp_path / "empty.jsonl").write_text("")
    empty = download(tmp_path / "empty", "--input", str(tmp_path / "empty.jsonl"))
    assert empty.exit_code == 1
    assert empty.output.strip() == "error: the input has no rows: empty.jsonl is empty"
    assert not (tmp_path / "empty").exists()
