import typer
from typer.testing import CliRunner

from openmementos.commands import INTERRUPTED, resumable_on_interrupt


def test_ctrl_c_in_a_stage_exits_130_with_the_resume_hint():
    app = typer.Typer()

    @app.command()
    def stage() -> None:
        with resumable_on_interrupt():
            raise KeyboardInterrupt

    result = CliRunner().invoke(app, [])
    assert result.exit_code == 130
    assert INTERRUPTED in result.output and "rerun to resume" in INTERRUPTED
