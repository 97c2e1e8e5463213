"""Driving async LLM work from synchronous stage code: one event loop on a background thread.

A stage's shard processor is a plain generator (``runtime.stage.Stage`` pulls rows from it), while the
engine is asyncio. :class:`LoopThread` keeps ONE event loop running on a daemon thread for the whole
run; :meth:`LoopThread.map_ordered` streams an iterator of inputs through an async per-item function,
at most ``window`` items in flight, and yields the results in input order. Nothing waits for a batch
to drain: a new item starts as soon as the oldest result is handed on, so concurrency stays up from
the first row to the last, and memory is bounded by the window.

:class:`EngineThread` is a :class:`LoopThread` that owns one engine for its lifetime (opened on the
loop, so its HTTP clients bind to it; closed before the loop stops).

    with EngineThread(open_engine) as runner:
        for row in runner.map_ordered(process_one, inputs, window=128):
            ...
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator
from concurrent.futures import Future
from typing import Any, Generic, Self, TypeVar

from openmementos.llm.completer import ChatCompleter

T = TypeVar("T")
Item = TypeVar("Item")
Result = TypeVar("Result")
Engine = TypeVar("Engine", bound=ChatCompleter)

_JOIN_TIMEOUT_S = 30


class LoopThread:
    """An asyncio event loop on a daemon thread; synchronous code submits coroutines to it.

    Use as a context manager: entering starts the thread; leaving cancels whatever is still running
    on the loop, waits for it to unwind, then stops the loop and joins the thread.
    """

    def __init__(self, name: str = "llm-loop") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self.run(self._wind_down())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=_JOIN_TIMEOUT_S)
            if not self._thread.is_alive():
                self._loop.close()

    async def _wind_down(self) -> None:
        """Cancel every other task on the loop and wait until they have unwound."""
        current = asyncio.current_task()
        tasks = [task for task in asyncio.all_tasks() if task is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        """Start `coroutine` on the loop; its result (or exception) arrives in the returned future."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run `coroutine` on the loop and wait for its result (its exception is raised here)."""
        future = self.submit(coroutine)
        try:
            return future.result()
        except BaseException:  # Ctrl-C while waiting included: stop it, it has nobody to report to
            future.cancel()
            raise

    def map_ordered(
        self,
        function: Callable[[Item], Coroutine[Any, Any, Result]],
        items: Iterable[Item],
        window: int,
    ) -> Iterator[Result]:
        """`function(item)` for every item, run concurrently on the loop, results yielded in input order.

        At most `window` items are in flight (and read ahead from `items`). The first exception, from
        `function` or from `items`, is raised here once its turn comes; when that happens, on Ctrl-C,
        or when the caller stops early (closing this generator), every item still in flight is
        cancelled.
        """
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        pending: deque[Future[Result]] = deque()
        try:
            for item in items:
                pending.append(self.submit(function(item)))
                if len(pending) >= window:
                    yield self._oldest(pending)
            while pending:
                yield self._oldest(pending)
        finally:
            for future in pending:
                future.cancel()

    @staticmethod
    def _oldest(pending: deque[Future[Result]]) -> Result:
        result = pending[0].result()  # still pending while waiting: cancelled if this raises
        pending.popleft()
        return result


class EngineThread(LoopThread, Generic[Engine]):
    """A :class:`LoopThread` that owns one engine from enter to exit.

    `open_engine` is awaited on the loop (so the engine's clients bind to that loop). On exit, what
    is still in flight is cancelled, then the engine is closed, then the loop stops.
    """

    def __init__(self, open_engine: Callable[[], Awaitable[Engine]], name: str = "llm-loop") -> None:
        super().__init__(name)
        self._open_engine = open_engine
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            raise RuntimeError("the engine is open only inside `with EngineThread(...)`")
        return self._engine

    def __enter__(self) -> Self:
        super().__enter__()
        try:
            self._engine = self.run(_awaited(self._open_engine))
        except BaseException:
            super().__exit__()
            raise
        return self

    async def _wind_down(self) -> None:
        await super()._wind_down()
        if self._engine is not None:
            await self._engine.close()
            self._engine = None


async def _awaited(make: Callable[[], Awaitable[T]]) -> T:
    return await make()
