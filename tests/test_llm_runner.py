"""`llm.runner`: one background event loop, an ordered bounded-window map over it, clean shutdown."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Iterator
from contextlib import closing

import pytest
from support.signals import sigint_raises

from openmementos.llm import EngineStats
from openmementos.llm.runner import EngineThread, LoopThread

BLOCK_S = 30.0
"""How long a blocked probe item waits for the cancellation the test expects."""


class Probe:
    """An async per-item function that records how many calls run at once and which were cancelled."""

    def __init__(self, fail_on: int | None = None, block_on: int | None = None, first_waits_for: int = 0) -> None:
        self.fail_on = fail_on
        self.first_waits_for = first_waits_for
        self.block_on = block_on
        self.running = 0
        self.most_running = 0
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.blocked = threading.Event()

    async def __call__(self, item: int) -> int:
        self.started.append(item)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if item == self.block_on:
                self.blocked.set()
                await asyncio.sleep(BLOCK_S)  # ended by cancellation; the bound keeps a broken test from hanging
            while item == 0 and self.running < self.first_waits_for:
                await asyncio.sleep(0.001)
            await asyncio.sleep(0.001 * ((item * 7) % 5))  # later items often finish first
            if item == self.fail_on:
                while self.block_on is not None and self.block_on not in self.started:
                    await asyncio.sleep(0.001)  # fail only once the blocked item is surely in flight
                raise RuntimeError(f"item {item} failed")
            return item * 10
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        finally:
            self.running -= 1


def counted(n: int, read: list[int]) -> Iterator[int]:
    for item in range(n):
        read.append(item)
        yield item


def test_results_come_in_input_order_with_at_most_window_in_flight() -> None:
    probe, read = Probe(first_waits_for=4), []  # the window fills up before the first item finishes
    with LoopThread() as loop:
        results = []
        for result in loop.map_ordered(probe, counted(50, read), window=4):
            results.append(result)
            assert len(read) - len(results) <= 4  # never read more than the window ahead
    assert results == [item * 10 for item in range(50)]
    assert probe.most_running == 4 and not probe.cancelled


def test_an_exception_propagates_in_its_turn_and_cancels_the_rest() -> None:
    probe = Probe(fail_on=5, block_on=7)
    with LoopThread() as loop:
        results = []
        with pytest.raises(RuntimeError, match="item 5 failed"):
            for result in loop.map_ordered(probe, range(100), window=4):
                results.append(result)
        assert results == [0, 10, 20, 30, 40]  # everything before the failure, in order
    assert 7 in probe.cancelled and probe.running == 0  # 6-8 were in flight: cancelled, unwound
    assert max(probe.started) <= 8


def test_an_exception_from_the_inputs_cancels_what_is_in_flight() -> None:
    probe = Probe(block_on=0)

    def inputs() -> Iterator[int]:
        yield from range(3)
        assert probe.blocked.wait(5)
        raise ValueError("bad input row")

    with LoopThread() as loop, pytest.raises(ValueError, match="bad input row"):
        list(loop.map_ordered(probe, inputs(), window=10))
    assert 0 in probe.cancelled and probe.running == 0


def test_stopping_early_cancels_what_is_in_flight() -> None:
    probe = Probe(block_on=3)
    with LoopThread() as loop, closing(loop.map_ordered(probe, range(100), window=4)) as results:
        assert [next(results) for _ in range(3)] == [0, 10, 20]
        assert probe.blocked.wait(5)
    assert 3 in probe.cancelled and probe.running == 0 and max(probe.started) <= 5


def test_ctrl_c_while_waiting_cancels_the_item_waited_on() -> None:
    """Ctrl-C as a shell delivers it, even when the test run ignores SIGINT (`nohup`); the blocked item
    gives up after BLOCK_S, so without the interrupt the test fails instead of hanging."""
    probe = Probe(block_on=0)

    def press_ctrl_c() -> None:
        if probe.blocked.wait(5):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGINT)

    with sigint_raises(), LoopThread() as loop:
        results = loop.map_ordered(probe, range(2), window=2)
        presser = threading.Thread(target=press_ctrl_c)
        presser.start()
        with pytest.raises(KeyboardInterrupt):
            next(results)
        presser.join(5)
    assert 0 in probe.cancelled and probe.running == 0


def test_a_window_below_one_is_refused() -> None:
    with LoopThread() as loop, pytest.raises(ValueError, match="window must be >= 1"):
        next(loop.map_ordered(Probe(), range(3), window=0))


class FakeEngine:
    def __init__(self) -> None:
        self.stats = EngineStats()
        self.opened_in = threading.current_thread()
        self.loop = asyncio.get_running_loop()
        self.closed_on: asyncio.AbstractEventLoop | None = None

    async def complete(self, request: object) -> object:
        raise NotImplementedError

    async def close(self) -> None:
        self.closed_on = asyncio.get_running_loop()


def test_engine_thread_opens_and_closes_one_engine_on_its_loop() -> None:
    async def open_engine() -> FakeEngine:
        return FakeEngine()

    with EngineThread(open_engine) as runner:
        engine = runner.engine
        assert engine.opened_in is not threading.main_thread()
        assert list(runner.map_ordered(Probe(), range(5), window=2)) == [0, 10, 20, 30, 40]
    assert engine.closed_on is engine.loop
    with pytest.raises(RuntimeError, match="only inside"):
        _ = runner.engine


def test_engine_thread_stops_its_loop_when_the_engine_cannot_open() -> None:
    async def open_engine() -> FakeEngine:
        raise OSError("cache folder not writable")

    runner = EngineThread(open_engine, name="failing-open")
    with pytest.raises(OSError, match="not writable"):
        runner.__enter__()
    assert not any(thread.name == "failing-open" for thread in threading.enumerate())
