"""The Batch API path against the stand-in's files and batches endpoints, including resume."""

from __future__ import annotations

import asyncio
import json
from collections import Counter

import openai
import pytest
from support.llm_helpers import TEST_KEY, complete_all, fast_settings, hash_of, questions, run
from support.openai_standin import FaultRule, Faults, OpenAIStandIn, Reply

from openmementos.llm import BatchEngine, BatchItemFailed, PriceTable, ResponseCache
from openmementos.llm.batch import LEDGER_FILENAME, BatchLedger

FILES = "POST /v1/files"
BATCHES = "POST /v1/batches"


def _engine(server: OpenAIStandIn, cache_path, **overrides) -> BatchEngine:
    return BatchEngine(
        fast_settings(server.base_url),
        cache=cache_path,
        prices=PriceTable({"gpt-4o-mini": {"input": 1.0, "output": 2.0}}),
        poll_interval_s=0.02,
        flush_idle_s=0.05,
        **overrides,
    )


def test_concurrent_requests_share_one_batch_at_half_price(tmp_path):
    requests = questions(25)
    with OpenAIStandIn(Faults(batch_delay_s=0.1), lambda body: Reply("ok", 1000, 100)) as server:

        async def main():
            async with _engine(server, tmp_path / "c.sqlite") as engine:
                return await complete_all(engine, requests), engine.stats

        results, stats = run(main())
        seen = server.stats()
    assert seen.routes[FILES] == 1 and seen.routes[BATCHES] == 1
    assert seen.chat_requests == 0, "batch mode never calls chat/completions directly"
    assert seen.batch_items == Counter({hash_of(r): 1 for r in requests})
    assert all(r.text == "ok" and r.attempts == 1 for r in results)
    assert results[0].cost_usd == pytest.approx(0.5 * (1000 * 1.0 + 100 * 2.0) / 1e6)
    assert (stats.sent, stats.answered, stats.in_flight) == (25, 25, 0)
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert len(cache) == 25
    assert BatchLedger(tmp_path / LEDGER_FILENAME).open_uploads() == []


def test_cached_answers_are_not_batched_again(tmp_path):
    requests = questions(6)
    with OpenAIStandIn(Faults(batch_delay_s=0.05)) as server:

        async def main(batch):
            async with _engine(server, tmp_path / "c.sqlite") as engine:
                return await complete_all(engine, batch)

        run(main(requests[:4]))
        results = run(main(requests))
        seen = server.stats()
    assert seen.routes[BATCHES] == 2
    assert seen.batch_items == Counter({hash_of(r): 1 for r in requests})
    assert [r.cached for r in results] == [True] * 4 + [False] * 2


def test_failed_items_go_into_a_new_batch(tmp_path):
    requests = questions(8)
    with OpenAIStandIn(Faults(batch_delay_s=0.05, batch_item_error=FaultRule(first=3))) as server:

        async def main():
            async with _engine(server, tmp_path / "c.sqlite") as engine:
                return await complete_all(engine, requests), engine.stats

        results, stats = run(main())
        seen = server.stats()
    assert seen.routes[BATCHES] == 2
    assert sorted(r.attempts for r in results) == [1] * 5 + [2] * 3
    assert stats.retries["batch_item"] == 3 and stats.sent == 11


def test_an_item_failing_every_batch_raises_a_typed_error(tmp_path):
    request = questions(1)[0]
    with OpenAIStandIn(Faults(batch_delay_s=0.02, batch_item_error=FaultRule(every=1))) as server:

        async def main():
            async with _engine(server, tmp_path / "c.sqlite") as engine:
                with pytest.raises(BatchItemFailed) as caught:
                    await engine.complete(request)
                return caught.value

        error = run(main())
        assert server.stats().routes[BATCHES] == 4  # fast_settings: max_attempts=4
    assert error.attempts == 4 and "server had an error" in error.detail
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert request.cache_key() not in cache


def test_a_restarted_run_reattaches_to_its_open_batch(tmp_path):
    requests = questions(10)
    with OpenAIStandIn(Faults(batch_delay_s=1.0)) as server:

        async def interrupted():
            async with _engine(server, tmp_path / "c.sqlite") as engine:
                work = asyncio.ensure_future(complete_all(engine, requests))
                while engine.stats.sent < 10:
                    await asyncio.sleep(0.01)
                work.cancel()  # like Ctrl-C while the batch is still running on the server
                await asyncio.gather(work, return_exceptions=True)

        run(interrupted())
        assert len(BatchLedger(tmp_path / LEDGER_FILENAME).open_uploads()) == 1

        async def resumed():
            async with _engine(server, tmp_path / "c.sqlite") as engine:
                return await complete_all(engine, requests)

        results = run(resumed())
        seen = server.stats()
    assert seen.routes[FILES] == 1 and seen.routes[BATCHES] == 1, "nothing is submitted twice"
    assert seen.batch_items == Counter({hash_of(r): 1 for r in requests})
    assert all(r.text.startswith("answer to") for r in results)
    assert BatchLedger(tmp_path / LEDGER_FILENAME).open_uploads() == []


def test_answers_of_a_reattached_batch_that_nobody_asks_for_are_stored_and_counted(tmp_path):
    requests = questions(10)
    with OpenAIStandIn(Faults(batch_delay_s=0.3), lambda body: Reply("ok", 1000, 100)) as server:

        async def interrupted():
            async with _engine(server, tmp_path / "c.sqlite") as engine:
                work = asyncio.ensure_future(complete_all(engine, requests))
                while engine.stats.sent < 10:
                    await asyncio.sleep(0.01)
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)

        run(interrupted())

        async def resumed():
            async with _engine(server, tmp_path / "c.sqlite") as engine:
                return await complete_all(engine, requests[:4]), engine.stats

        results, stats = run(resumed())
    assert [r.text for r in results] == ["ok"] * 4
    assert (stats.sent, stats.answered) == (0, 10), "every answer paid for is counted, once"
    assert stats.cost_usd == pytest.approx(10 * 0.5 * (1000 * 1.0 + 100 * 2.0) / 1e6)
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert set(cache.keys()) == {r.cache_key() for r in requests}


def test_a_recorded_upload_without_batch_id_is_adopted_or_submitted(tmp_path):
    """A crash between upload and batch creation: the batch is found on the server, or created once."""
    requests = questions(4)
    lines = [
        json.dumps({"custom_id": r.cache_key(), "method": "POST", "url": "/v1/chat/completions", "body": r.body()})
        for r in requests
    ]
    with OpenAIStandIn(Faults(batch_delay_s=0.05)) as server:
        client = openai.OpenAI(base_url=server.base_url, api_key=TEST_KEY, max_retries=0)
        adopted = client.files.create(file=("a.jsonl", "\n".join(lines[:2]).encode()), purpose="batch")
        client.batches.create(input_file_id=adopted.id, endpoint="/v1/chat/completions", completion_window="24h")
        orphan = client.files.create(file=("b.jsonl", "\n".join(lines[2:]).encode()), purpose="batch")
        ledger = BatchLedger(tmp_path / LEDGER_FILENAME)
        ledger.record_upload(adopted.id, {r.cache_key(): r.model for r in requests[:2]})
        ledger.record_upload(orphan.id, {r.cache_key(): r.model for r in requests[2:]})
        ledger.close()

        async def resumed():
            async with _engine(server, tmp_path / "c.sqlite") as engine:
                return await complete_all(engine, requests)

        results = run(resumed())
        seen = server.stats()
    assert seen.routes[FILES] == 2 and seen.routes[BATCHES] == 2, "one adopted, one created, none resubmitted"
    assert seen.batch_items == Counter({hash_of(r): 1 for r in requests})
    assert len(results) == 4


def test_batch_mode_needs_a_single_endpoint(tmp_path):
    from openmementos.llm import ConfigurationError

    with pytest.raises(ConfigurationError):
        BatchEngine(fast_settings("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"), cache=tmp_path / "c.sqlite")
