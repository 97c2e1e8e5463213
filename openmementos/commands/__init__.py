"""One module per CLI command; each is registered in openmementos.cli."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

INTERRUPTED = "interrupted: finished shards and every LLM answer received are kept; rerun to resume."


def exit_interrupted() -> None:
    """Ctrl-C ends a stage: say what was kept and exit with 130 (the shell's code for SIGINT)."""
    typer.secho(INTERRUPTED, err=True)
    raise typer.Exit(130)


@contextmanager
def resumable_on_interrupt() -> Iterator[None]:
    """Turn Ctrl-C inside a stage run into `exit_interrupted` instead of a traceback."""
    try:
        yield
    except KeyboardInterrupt:
        exit_interrupted()
