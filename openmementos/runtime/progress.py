"""Progress on the console: a bar over a stage's shards, one over the files of a pre-pass, one over rows.

All are rich progress bars; a stage's bar can carry a live status line under it (requests in flight,
cost so far), given as a callable that is asked at every refresh.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")


def _progress_with_status(status: Callable[[], str]) -> Any:
    """A rich `Progress` class that shows `status()` on a line under the bar, at every refresh."""
    from rich.progress import Progress
    from rich.text import Text

    class ProgressWithStatus(Progress):
        def get_renderables(self) -> Any:
            yield from super().get_renderables()
            yield Text(status(), overflow="ellipsis", no_wrap=True)

    return ProgressWithStatus


class StageProgress:
    """Shards done, rows written, rows/s and the most frequent quarantine reasons."""

    def __init__(self, description: str, shards: int, status: Callable[[], str] | None = None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.rows = 0
        self.reasons: Counter[str] = Counter()
        self.started = self._refreshed = time.monotonic()
        progress_class = _progress_with_status(status) if status is not None else Progress
        self._progress = progress_class(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("shards · {task.fields[rows]} rows · {task.fields[rate]} rows/s {task.fields[reasons]}"),
            TimeElapsedColumn(),
            disable=not shards,
        )
        self._task = self._progress.add_task(description, total=shards, rows=0, rate="0", reasons="")

    def __enter__(self) -> StageProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._update()
        self._progress.stop()

    def row(self, reason: str | None) -> None:
        """One row done (`reason`: why it was quarantined, None when it was written)."""
        self.rows += 1
        if reason:
            self.reasons[reason] += 1
        if time.monotonic() - self._refreshed > 0.2:
            self._update()

    def flush(self) -> None:
        self._update()

    def add(self, rows: int, reasons: dict[str, int]) -> None:
        """Rows done elsewhere (a worker process or a cluster task), reported in one go."""
        self.rows += rows
        self.reasons.update(reasons)
        self._update()

    def shard_done(self) -> None:
        self._update()
        self._progress.advance(self._task)

    def _update(self) -> None:
        self._refreshed = time.monotonic()
        rate = self.rows / max(self._refreshed - self.started, 1e-9)
        reasons = ", ".join(f"{k}: {v}" for k, v in self.reasons.most_common(4))
        self._progress.update(
            self._task,
            rows=f"{self.rows:,}",
            rate=f"{rate:,.0f}",
            reasons=f"· quarantined {reasons}" if reasons else "",
        )


class FileProgress:
    """Files read and rows seen, for a pass over the input that writes nothing (e.g. the selection plan)."""

    def __init__(self, description: str, files: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.rows = 0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files · {task.fields[rows]} rows"),
            TimeElapsedColumn(),
        )
        self._task = self._progress.add_task(description, total=files, rows="0")

    def __enter__(self) -> FileProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def file_done(self, rows: int) -> None:
        """One more file read, with its rows."""
        self.rows += rows
        self._progress.update(self._task, advance=1, rows=f"{self.rows:,}")


@contextmanager
def row_progress(
    description: str, total: int, enabled: bool = True, transient: bool = False
) -> Iterator[Callable[..., None]]:
    """A bar over `total` rows; yields the function that advances it (by one, or by `rows`).

    A context manager rather than a wrapping generator: the bar's thread stops when the block ends, also
    on an error (a half-consumed generator would stop it whenever it is collected, in any thread).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn(f"[bold]{description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not enabled, transient=transient) as bar:
        task = bar.add_task("rows", total=total)
        yield lambda rows=1: bar.advance(task, rows)
