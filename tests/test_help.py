"""`--help` shows every word it is given, no value placeholder for flags or Python types for repeatable
options, the same `I/N` for --shard everywhere."""

from __future__ import annotations

import re
from importlib.metadata import version

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.commands.adapter import help_text

COMMANDS = sorted(get_command(app).commands)  # type: ignore[attr-defined]
runner = CliRunner()


def help_of(*command: str, width: int = 250) -> str:
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": str(width)})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_flags_take_no_value_placeholder_and_shard_reads_i_of_n(command):
    text = help_of(command)
    assert "<bool>" not in text and "<list[" not in text  # a repeatable option names one value
    assert re.search(r"--help\s+Show this message", text)
    shard = [line for line in text.splitlines() if "--shard " in line]
    assert all(re.search(r"--shard\s+I/N\s", line) for line in shard), shard


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("download", ["reasoning between <think> and </think>", "an unclosed <think>", "part-*.parquet"]),
        ("run", ["<workdir>/<stage>"]),
        ("publish", ["data/train-*.parquet", "full/train-*.parquet"]),
    ],
)
def test_help_keeps_angle_brackets_and_stars(command, words):
    text = " ".join(help_of(command).split())  # rich wraps lines; compare the words
    for words_shown in words:
        assert words_shown in text


def test_prose_reflows_to_the_terminal_and_examples_keep_their_lines():
    narrow = help_of("download", width=80)
    assert max(len(line) for line in narrow.splitlines()) <= 80
    lines = [line.strip() for line in help_of("download", width=1000).splitlines()]
    assert "openmementos download out/demo --sample" in lines  # an example, on its own line
    paragraph = next(line for line in lines if line.startswith("Rows are converted"))
    assert paragraph.endswith("with the reason; every count is in manifest.json.")  # a paragraph is one line


def test_markup_in_help_text_is_shown_as_written():
    assert help_text("Keep [bold]x[/] and [OUT_DIR].") == r"Keep \[bold]x\[/] and [OUT_DIR]."
    assert help_text("A para\ngraph.\n\n  ex ample\n  two") == "A para graph.\n\n  ex ample\n  two"


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"openmementos {version('openmementos')}"
