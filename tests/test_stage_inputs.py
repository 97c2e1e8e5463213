"""Every stage reads its input's manifest first: another stage's folder, an unfinished run or a folder that is
no stage folder is refused in one line naming what it holds and what is expected, and nothing is created."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.trace_builders import write_stage_folder
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.resources import sample_traces
from openmementos.runtime.manifest import done_marker
from openmementos.schema import SourceTrace

WIDE = {"COLUMNS": "250", "OPENAI_API_KEY": None, "OPENAI_BASE_URL": None}
runner = CliRunner()


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A finished folder of each stage (the rows do not matter here: only what the manifest says)."""
    root = tmp_path_factory.mktemp("stages")
    traces = sample_traces()[:4]
    folders = {}
    for stage in ("download", "segment", "annotate", "validate"):
        write_stage_folder(root / stage, stage, SourceTrace, [traces[:2], traces[2:]])
        folders[stage] = root / stage
    (root / "plain").mkdir()
    (root / "plain" / "notes.txt").write_text("not a stage folder")
    folders["plain"] = root / "plain"
    return folders


def refused(*args: str) -> str:
    result = runner.invoke(app, list(args), env=WIDE)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize(
    ("command", "given", "expected"),
    [
        ("segment", "annotate", "`download`"),
        ("annotate", "download", "`segment`"),
        ("validate", "segment", "`annotate`"),
        ("stats", "segment", "`annotate` or `validate`"),
        ("publish", "download", "`validate`"),
        ("download", "segment", "`download`"),
    ],
)
def test_another_stages_folder_is_refused_before_anything_is_created(folders, tmp_path, command, given, expected):
    out = tmp_path / "out"
    args = {
        "download": ["download", str(out), "--input", str(folders[given])],
        "stats": ["stats", str(folders[given]), "--plots", str(out)],
        "publish": ["publish", str(folders[given]), "--to", str(out)],
    }.get(command, [command, str(folders[given]), str(out)])
    line = refused(*args)
    assert f"holds the output of `{given}`; {command} reads the output of {expected}" in line
    assert "openmementos validate" not in line  # publish no longer suggests validating a download folder
    assert not out.exists()


def test_an_unfinished_run_and_a_plain_folder_are_refused(folders, tmp_path):
    unfinished = tmp_path / "unfinished"
    write_stage_folder(unfinished, "download", SourceTrace, [sample_traces()[:2], sample_traces()[2:4]])
    done_marker(unfinished, "part-00001").unlink()
    line = refused("segment", str(unfinished), str(tmp_path / "out"))
    assert "holds an unfinished `download` run: 1 of 2 shards are not done (first: part-00001)" in line
    assert "rerun `openmementos download` into it" in line
    line = refused("annotate", str(folders["plain"]), str(tmp_path / "out"))
    assert "is not a stage folder (it has no manifest.json); annotate reads the output of `segment`" in line
    line = refused("validate", str(tmp_path / "missing"), str(tmp_path / "out"))
    assert "missing is not a folder; validate reads the output of `annotate`" in line
    assert not (tmp_path / "out").exists()


def test_an_llm_run_refused_for_a_missing_api_key_creates_nothing(folders, tmp_path):
    for args in (
        ["annotate", str(folders["segment"]), str(tmp_path / "ann"), "--model", "gpt-4.1-mini"],
        ["segment", str(folders["download"]), str(tmp_path / "seg"), "--scorer", "llm", "--model", "gpt-4.1-mini"],
    ):
        line = refused(*args)
        assert line == "error: no API key for api.openai.com: pass --api-key or set OPENAI_API_KEY"
    assert list(tmp_path.iterdir()) == []  # no OUT_DIR, no .llm/ cache


def test_writing_into_another_stages_folder_is_refused(folders):
    before = sorted(p.relative_to(folders["annotate"]) for p in folders["annotate"].rglob("*"))
    line = refused("segment", str(folders["download"]), str(folders["annotate"]))
    assert f"{folders['annotate']} holds the output of `annotate`, not of `segment`; write to a new folder" in line
    assert sorted(p.relative_to(folders["annotate"]) for p in folders["annotate"].rglob("*")) == before
