"""kill -9 in the middle of a run, then a rerun: nothing that completed is sent again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from support.llm_helpers import hash_of, questions
from support.openai_standin import Faults, OpenAIStandIn

from openmementos.llm import ResponseCache

COUNT = 60
DRIVER = """
import asyncio, sys
from support.llm_helpers import complete_all, fast_settings, questions
from openmementos.llm import LLMEngine

async def main(url, cache_path):
    async with LLMEngine(fast_settings(url, concurrency=4), cache=cache_path) as engine:
        await complete_all(engine, questions(int(sys.argv[3])))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def _driver(url: str, cache_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", DRIVER, url, str(cache_path), str(COUNT)], env=env)


def _stored(cache_path: Path) -> int:
    if not cache_path.exists():
        return 0
    try:
        with sqlite3.connect(cache_path, timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def test_kill_9_then_rerun_resends_only_unfinished_requests(tmp_path):
    cache_path = tmp_path / "llm_cache.sqlite"
    requests = questions(COUNT)
    faults = Faults(latency_s=0.1)
    with OpenAIStandIn(faults) as server:
        victim = _driver(server.base_url, cache_path)
        deadline = time.monotonic() + 60
        while _stored(cache_path) < 12 and time.monotonic() < deadline:
            time.sleep(0.01)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        with ResponseCache(cache_path) as cache:
            finished = set(cache.keys())
        assert 12 <= len(finished) < COUNT, "the kill must land mid-run"

        server.set_faults(faults)  # reset the counters: count only what the rerun sends
        rerun = _driver(server.base_url, cache_path)
        assert rerun.wait(60) == 0
        resent = server.stats().chat_received

    unfinished = [r for r in requests if r.cache_key() not in finished]
    assert resent == Counter({hash_of(r): 1 for r in unfinished}), "only unfinished requests are sent again"
    with ResponseCache(cache_path) as cache:
        assert set(cache.keys()) == {r.cache_key() for r in requests}
