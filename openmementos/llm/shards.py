"""The base of every shard processor that drives an LLM: one engine for the run, on a background loop.

A stage's shard processor is a plain generator (`runtime.stage.Stage` pulls rows from it), while the
engine is asyncio. An `LLMShardProcessor` owns an `EngineThread` (one event loop, one engine) for the
whole run; each shard streams its items through the async `process` with at most `window` items in
flight, and hands the results to `finish` in input order, so output is deterministic and memory flat.

Subclasses say what an item is (`items`), what to do with it on the loop (`process`) and how a result
becomes a row (`finish`). Use the processor as a context manager around `Stage.run`; it runs in this
process under every executor (`in_one_process`): its concurrency comes from the loop.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import closing
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel

from openmementos.llm.completer import ChatCompleter
from openmementos.llm.runner import EngineThread
from openmementos.runtime.stage import Quarantined, ShardTask

Item = TypeVar("Item")
Result = TypeVar("Result")


class LLMShardProcessor(ABC, Generic[Item, Result]):
    in_one_process: ClassVar[bool] = True

    def __init__(
        self, open_engine: Callable[[], Awaitable[ChatCompleter]], window: int, name: str = "llm-loop"
    ) -> None:
        self.window = max(window, 1)
        self._runner: EngineThread[ChatCompleter] = EngineThread(open_engine, name=name)

    def __enter__(self) -> Self:
        self._runner.__enter__()
        try:
            self.started(self._runner.engine)
        except BaseException:
            self._runner.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._runner.__exit__(*exc)

    def started(self, engine: ChatCompleter) -> None:
        """Called once the engine is open (build what needs it here)."""

    @abstractmethod
    def items(self, task: ShardTask[Any]) -> Iterable[Item]:
        """The items of one shard, read in order (in this thread)."""

    @abstractmethod
    async def process(self, item: Item) -> Result:
        """One item's LLM work, on the loop."""

    @abstractmethod
    def finish(self, result: Result) -> BaseModel | Quarantined:
        """The row of one result, in input order (in this thread)."""

    def shard_finished(self, task: ShardTask[Any]) -> None:
        """Called after the last row of a shard was handed on."""

    def __call__(self, task: ShardTask[Any]) -> Iterator[BaseModel | Quarantined]:
        results = self._runner.map_ordered(self.process, self.items(task), self.window)
        with closing(results):  # interrupted or failed: stop what this shard still has in flight
            for result in results:
                yield self.finish(result)
        self.shard_finished(task)
