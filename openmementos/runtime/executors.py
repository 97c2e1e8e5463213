"""Where a stage's shard tasks run: one seam, two executors.

An executor gets a `ShardJob` (picklable: it processes one shard task into the stage folder) and the
tasks still to do; it runs them, tells the progress bar about rows and shards as they finish, and calls
`shard_done` after each so the stage can rewrite its manifest. Resumption never depends on the
executor: a shard counts when its done marker is on disk, whoever wrote it.

- `local` (default): in this process, or a pool of `workers` processes (one shard each at a time);
- `ray`: each shard is a Ray task on a cluster (`--ray-address`, default: start a local one). Every
  node must have openmementos installed and see the stage folders at the same paths (a shared file
  system).

Processors that hold live resources, such as an LLM engine on an event loop (`in_one_process`), run
in this process under either executor: their concurrency comes from that loop, not from processes.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from openmementos.runtime.manifest import ShardDone
from openmementos.runtime.progress import StageProgress
from openmementos.runtime.stage import ShardJob, ShardTask

ExecutorKind = Literal["local", "ray"]


class Executor(Protocol):
    def run(
        self, job: ShardJob, tasks: Sequence[ShardTask[Any]], progress: StageProgress, shard_done: Callable[[], Any]
    ) -> None: ...


def make_executor(kind: ExecutorKind = "local", workers: int | None = None, ray_address: str | None = None) -> Executor:
    """The executor a stage request asks for (`workers` None: one process locally, the cluster's CPUs on Ray)."""
    if kind == "ray":
        return RayExecutor(ray_address, workers)
    if ray_address is not None:
        raise ValueError("--ray-address needs --executor ray")
    return LocalExecutor(workers or 1)


def _in_this_process(
    job: ShardJob, tasks: Sequence[ShardTask[Any]], progress: StageProgress, shard_done: Callable[[], Any]
) -> None:
    for task in tasks:
        job(task, progress)
        progress.shard_done()
        shard_done()


@dataclass(frozen=True)
class LocalExecutor:
    """Shards in this process (`workers` 1) or in a pool of worker processes."""

    workers: int = 1

    def run(
        self, job: ShardJob, tasks: Sequence[ShardTask[Any]], progress: StageProgress, shard_done: Callable[[], Any]
    ) -> None:
        if self.workers <= 1 or len(tasks) <= 1 or job.in_one_process:
            _in_this_process(job, tasks, progress, shard_done)
            return
        context = multiprocessing.get_context("fork" if os.name == "posix" else "spawn")
        updates = context.SimpleQueue()
        with ProcessPoolExecutor(
            max_workers=self.workers, mp_context=context, initializer=_start_worker, initargs=(updates,)
        ) as pool:
            pending = {pool.submit(_run_in_worker, job, task) for task in tasks}
            while pending:
                finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                while not updates.empty():
                    progress.add(*updates.get())
                for future in finished:
                    future.result()  # re-raises a worker's error
                    progress.shard_done()
                    shard_done()


class _QueueReporter:
    """Row counts from a worker process, sent to the parent in batches (a message per row is too slow)."""

    def __init__(self, updates: Any, interval: float = 0.5) -> None:
        self.updates = updates
        self.interval = interval
        self._rows = 0
        self._reasons: Counter[str] = Counter()
        self._last = time.monotonic()

    def row(self, reason: str | None) -> None:
        self._rows += 1
        if reason:
            self._reasons[reason] += 1
        if time.monotonic() - self._last > self.interval:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self.updates.put((self._rows, dict(self._reasons)))
        self._rows, self._reasons, self._last = 0, Counter(), time.monotonic()


_worker_reporter: _QueueReporter | None = None


def _start_worker(updates: Any) -> None:
    global _worker_reporter
    _worker_reporter = _QueueReporter(updates)


def _run_in_worker(job: ShardJob, task: ShardTask[Any]) -> ShardDone:
    return job(task, _worker_reporter)


@dataclass(frozen=True)
class RayExecutor:
    """Each shard a Ray task; at most `workers` in flight (default: the cluster's CPUs)."""

    address: str | None = None
    workers: int | None = None

    def run(
        self, job: ShardJob, tasks: Sequence[ShardTask[Any]], progress: StageProgress, shard_done: Callable[[], Any]
    ) -> None:
        if job.in_one_process or not tasks:
            _in_this_process(job, tasks, progress, shard_done)
            return
        try:
            import ray
        except ImportError:
            raise RuntimeError("--executor ray needs Ray: pip install 'openmementos[ray]'") from None
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        try:
            self._run_on_cluster(ray, job, tasks, progress, shard_done)
        finally:
            if started_here:
                ray.shutdown()

    def _run_on_cluster(
        self,
        ray: Any,
        job: ShardJob,
        tasks: Sequence[ShardTask[Any]],
        progress: StageProgress,
        shard_done: Callable[[], Any],
    ) -> None:
        remote_job = ray.remote(num_cpus=1)(_run_job)
        limit = self.workers or max(int(ray.cluster_resources().get("CPU", 1)), 1)
        job_ref = ray.put(job)
        waiting = list(tasks)
        running: list[Any] = []
        try:
            while waiting or running:
                while waiting and len(running) < limit:
                    running.append(remote_job.remote(job_ref, waiting.pop(0)))
                finished, running = ray.wait(running, num_returns=1)
                done: ShardDone = ray.get(finished[0])  # re-raises the task's error
                progress.add(done.rows + done.quarantined, done.reasons)
                progress.shard_done()
                shard_done()
        except BaseException:
            for ref in running:
                ray.cancel(ref, force=True)
            raise


def _run_job(job: ShardJob, task: ShardTask[Any]) -> ShardDone:
    return job(task)
