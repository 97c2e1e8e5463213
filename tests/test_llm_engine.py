"""The LLM engine against the loopback OpenAI stand-in: answers, faults, cache, single-flight, pacing."""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter

import pytest
from support.llm_helpers import complete_all, fast_settings, hash_of, questions, run
from support.openai_standin import ErrorReply, FaultRule, Faults, OpenAIStandIn, Reply

from openmementos.llm import (
    ChatRequest,
    LLMEngine,
    PriceTable,
    RequestRejected,
    ResponseCache,
    RetriesExhausted,
)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_answers_usage_and_cost_are_accounted(tmp_path):
    def responder(body):
        return Reply(f"echo {body['messages'][-1]['content']}", prompt_tokens=100, completion_tokens=10)

    requests = questions(12)
    prices = PriceTable({"gpt-4o-mini": {"input": 1.0, "output": 2.0}})
    with OpenAIStandIn(Faults(latency_s=0.01), responder) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url), cache=tmp_path / "c.sqlite", prices=prices) as engine:
                return await complete_all(engine, requests), engine.stats

        results, stats = run(main())
        assert server.stats().chat_answered == Counter({hash_of(r): 1 for r in requests})
    assert [r.text for r in results] == [f"echo q {i}" for i in range(12)]
    assert all(not r.cached and r.attempts == 1 and r.finish_reason == "stop" for r in results)
    assert results[0].cost_usd == pytest.approx((100 * 1.0 + 10 * 2.0) / 1e6)
    assert (stats.sent, stats.answered, stats.prompt_tokens, stats.completion_tokens) == (12, 12, 1200, 120)
    assert stats.cost_usd == pytest.approx(12 * 120e-6)
    assert stats.in_flight == 0
    assert "sending 0 | queued 0" in stats.status_line()


def test_cached_prompt_tokens_are_read_from_usage_and_priced(tmp_path):
    """A provider with prefix caching (the stand-in's) reports cached_tokens; the engine counts and prices them."""
    shared = "The trace, word for word. " * 400  # ~10,000 characters: a prefix of ~2,500 tokens
    requests = [
        ChatRequest(
            model="gpt-4.1-mini",
            messages=[{"role": "system", "content": "S"}, {"role": "user", "content": shared + tail}],
        )
        for tail in ("compress it", "judge it", "refine it")
    ]
    with OpenAIStandIn(Faults(prefix_cache_min_tokens=1024)) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url), cache=tmp_path / "c.sqlite") as engine:
                results = [await engine.complete(request) for request in requests]
                return results, engine.stats

        results, stats = run(main())
        again, _ = run(main())
    first, *later = results
    assert first.cached_prompt_tokens == 0, "nothing seen before the first request"
    for result in later:
        assert result.prompt_tokens * 0.8 <= result.cached_prompt_tokens < result.prompt_tokens
        assert result.cached_prompt_tokens % 128 == 0
        full = PriceTable().cost("gpt-4.1-mini", result.prompt_tokens, result.completion_tokens)
        assert result.cost_usd == pytest.approx(
            PriceTable().cost(
                "gpt-4.1-mini",
                result.prompt_tokens,
                result.completion_tokens,
                cached_prompt_tokens=result.cached_prompt_tokens,
            )
        )
        assert result.cost_usd < 0.5 * full
    assert stats.cached_prompt_tokens == sum(r.cached_prompt_tokens for r in later)
    assert "cached" in stats.status_line()
    assert [r.cached_prompt_tokens for r in again] == [r.cached_prompt_tokens for r in results], (
        "the response cache keeps what the provider cached, so a replayed answer is priced the same"
    )


def test_rerun_is_served_from_the_cache_without_new_requests(tmp_path):
    requests = questions(10)
    with OpenAIStandIn() as server:

        async def once():
            async with LLMEngine(fast_settings(server.base_url), cache=tmp_path / "c.sqlite") as engine:
                return await complete_all(engine, requests), engine.stats

        first, _ = run(once())
        assert server.stats().chat_requests == 10
        second, stats = run(once())
        assert server.stats().chat_requests == 10, "a rerun must not re-send completed requests"
    assert [r.text for r in second] == [r.text for r in first]
    assert all(r.cached and r.attempts == 0 for r in second)
    assert (stats.cache_hits, stats.sent, stats.cost_usd) == (10, 0, 0.0)


def test_identical_requests_in_flight_are_sent_once():
    request = questions(1)[0]
    with OpenAIStandIn(Faults(latency_s=0.1)) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                return await complete_all(engine, [request] * 5), engine.stats

        results, stats = run(main())
        assert server.stats().chat_requests == 1
    assert len({r.text for r in results}) == 1
    assert sorted(r.cached for r in results) == [False, True, True, True, True]
    assert (stats.coalesced, stats.answered) == (4, 1)


def test_429_waits_for_retry_after_and_pauses_every_sender():
    first, second = questions(2)
    with OpenAIStandIn(Faults(rate_limit=FaultRule(first=1), retry_after_s=0.4)) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                start = time.monotonic()
                leader = asyncio.create_task(engine.complete(first))
                while engine.stats.retries["rate_limited"] == 0:
                    await asyncio.sleep(0.005)
                follower = await engine.complete(second)  # sent after the 429: must wait out the pause too
                follower_done = time.monotonic() - start
                return await leader, follower, follower_done, time.monotonic() - start

        leader, follower, follower_done, total = run(main())
        assert server.stats().faults["rate_limit"] == 1
    assert leader.attempts == 2 and follower.attempts == 1
    assert follower_done >= 0.35, "the pause ordered by retry-after applies to all senders"
    assert total >= 0.4


def test_retry_after_ms_is_preferred():
    with OpenAIStandIn(Faults(rate_limit=FaultRule(first=2), retry_after_s=30, retry_after_ms=100)) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                start = time.monotonic()
                result = await engine.complete(questions(1)[0])
                return result, time.monotonic() - start

        result, elapsed = run(main())
    assert result.attempts == 3
    assert 0.2 <= elapsed < 2.0


def test_server_errors_truncated_and_malformed_bodies_are_retried():
    faults = Faults(server_error=FaultRule(first=1), truncate=FaultRule(every=3), malformed_body=FaultRule(every=4))
    requests = questions(6)
    with OpenAIStandIn(faults) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url, concurrency=1, max_attempts=5)) as engine:
                return await complete_all(engine, requests), engine.stats

        results, stats = run(main())
        injected = server.stats().faults
    assert len(results) == 6 and all(r.text.startswith("answer to") for r in results)
    assert stats.retries["server_error"] == injected["server_error"] == 1
    assert stats.retries["connection"] == injected["truncate"] >= 1
    assert stats.retries["malformed"] == injected["malformed_body"] >= 1
    assert stats.sent == 6 + sum(injected.values())


def test_a_hanging_server_times_out_and_is_retried():
    with OpenAIStandIn(Faults(hang=FaultRule(first=1), hang_s=5)) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url, timeout_s=0.3)) as engine:
                start = time.monotonic()
                result = await engine.complete(questions(1)[0])
                return result, engine.stats, time.monotonic() - start

        result, stats, elapsed = run(main())
    assert result.attempts == 2 and stats.retries["timeout"] == 1
    assert elapsed < 2.5


def test_malformed_answers_surface_as_a_typed_error_and_are_not_cached(tmp_path):
    request = questions(1)[0]
    with OpenAIStandIn(Faults(malformed_body=FaultRule(every=1))) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url, max_attempts=3), cache=tmp_path / "c.sqlite") as engine:
                with pytest.raises(RetriesExhausted) as caught:
                    await engine.complete(request)
                return caught.value, engine.stats

        error, stats = run(main())
        assert server.stats().chat_requests == 3
    assert (error.reason, error.attempts, error.last_status) == ("malformed", 3, None)
    assert stats.failed == 1
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        assert request.cache_key() not in cache


def test_connection_refused_is_retried_then_raised():
    async def main():
        settings = fast_settings(f"http://127.0.0.1:{_closed_port()}/v1", max_attempts=3)
        async with LLMEngine(settings) as engine:
            with pytest.raises(RetriesExhausted) as caught:
                await engine.complete(questions(1)[0])
            return caught.value, engine.stats

    error, stats = run(main())
    assert (error.reason, error.attempts) == ("connection", 3)
    assert stats.retries["connection"] == 2


def test_a_rejected_request_is_not_retried():
    def responder(body):
        raise ErrorReply(400, "This model's maximum context length is 8192 tokens.")

    with OpenAIStandIn(responder=responder) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                with pytest.raises(RequestRejected) as caught:
                    await engine.complete(questions(1)[0])
                return caught.value

        error = run(main())
        assert server.stats().chat_requests == 1
    assert error.status == 400 and "maximum context length" in str(error)


def _schema_requests(count: int) -> list[ChatRequest]:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    return [
        ChatRequest(model="m", messages=[{"role": "user", "content": f"{i}"}], json_schema=schema) for i in range(count)
    ]


def test_structured_output_steps_down_one_refused_request_per_form():
    seen_formats = []

    def responder(body):
        seen_formats.append((body.get("response_format") or {}).get("type", "none"))
        return '{"n": 3}'

    with OpenAIStandIn(Faults(reject_response_format=True), responder) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url, concurrency=8)) as engine:
                return await complete_all(engine, _schema_requests(12)), engine.stats

        results, stats = run(main())
        observed = server.stats()
    assert observed.faults["reject_response_format"] == 2, "json_schema refused once, json_object once"
    assert observed.response_formats == Counter({"json_schema": 1, "json_object": 1, "none": 12})
    assert [r.text for r in results] == ['{"n": 3}'] * 12 and seen_formats == ["none"] * 12
    assert stats.structured_output == {server.base_url: "none"} and len(stats.notes) == 2
    assert stats.retries == Counter() and stats.sent == 14


def test_llamacpp_500_on_json_schema_moves_to_json_object_with_the_schema():
    bodies = []

    def responder(body):
        bodies.append(body)
        return '{"n": 1}'

    with OpenAIStandIn(Faults(llamacpp_response_format=True), responder) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url, concurrency=16)) as engine:
                first = await complete_all(engine, _schema_requests(40))
                plain = await engine.complete(questions(1)[0])  # no schema: never held back
                return first, plain, engine.stats

        results, plain, stats = run(main())
        observed = server.stats()
    assert observed.faults["llamacpp_response_format"] == 1, "one refused request, never retried as a 5xx"
    assert observed.response_formats["json_object"] == 40 and stats.retries == Counter()
    assert all(b["response_format"]["schema"]["required"] == ["n"] for b in bodies if "response_format" in b)
    assert len(results) == 40 and plain.text == '{"n": 1}' and "response_format" not in bodies[-1]
    assert "refuses structured output as json_schema (HTTP 500): using json_object" in stats.notes[0]


def test_a_400_naming_the_form_steps_down_and_another_400_does_not():
    def responder(body):
        if (body.get("response_format") or {}).get("type") == "json_schema":
            raise ErrorReply(400, "json_schema is not supported by this backend")
        if body["messages"][0]["content"] == "0":
            raise ErrorReply(400, "This model's maximum context length is 8192 tokens")
        return '{"n": 2}'

    with OpenAIStandIn(responder=responder) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url, concurrency=1)) as engine:
                with pytest.raises(RequestRejected, match="maximum context length"):
                    await engine.complete(_schema_requests(1)[0])
                return await complete_all(engine, _schema_requests(3)[1:]), engine.stats

        results, stats = run(main())
    assert [r.text for r in results] == ['{"n": 2}'] * 2
    assert stats.structured_output == {server.base_url: "json_object"}, "stepped down once, not to none"
    assert len(stats.notes) == 1 and "refuses structured output as json_schema (HTTP 400)" in stats.notes[0]


def test_a_fixed_form_the_server_refuses_is_a_clear_rejection():
    with OpenAIStandIn(Faults(llamacpp_response_format=True)) as server:

        async def main():
            settings = fast_settings(server.base_url, structured_output="json_schema")
            async with LLMEngine(settings) as engine:
                with pytest.raises(RequestRejected, match="--structured-output auto or none"):
                    await engine.complete(_schema_requests(1)[0])

        run(main())
        assert server.stats().chat_requests == 1


def test_a_template_without_a_system_role_gets_the_instructions_in_the_user_turn():
    seen = []

    def responder(body):
        seen.append(body["messages"])
        return "ok"

    request = ChatRequest(model="m", messages=[{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    with OpenAIStandIn(Faults(refuse_system_role=True), responder) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                return await engine.complete(request), engine.stats

        result, stats = run(main())
        assert server.stats().faults["refuse_system_role"] == 1
    assert result.text == "ok" and seen == [[{"role": "user", "content": "S\n\nU"}]]
    assert "refuses the system role" in stats.notes[0]


def test_max_tokens_override_replaces_every_budget():
    limits = []

    def responder(body):
        limits.append(body["max_tokens"])
        return "x"

    with OpenAIStandIn(responder=responder) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url, max_tokens=77)) as engine:
                request = ChatRequest(model="m", messages=[{"role": "user", "content": "q"}], max_tokens=5)
                await engine.complete(request)
                await engine.complete(questions(1)[0])

        run(main())
    assert limits == [77, 77]


@pytest.mark.parametrize(
    ("faults", "base_path", "model", "message"),
    [
        (None, "/v1", "m", "nothing listening"),
        (Faults(), "/api", "m", "must be the API root"),
        (Faults(served_models=("served-model",)), "/v1", "other-model", "does not serve the model 'other-model'"),
    ],
    ids=["nothing-listening", "wrong-path", "unknown-model"],
)
def test_preflight_fails_within_seconds_naming_the_url(faults, base_path, model, message):
    from openmementos.llm import ConfigurationError

    async def check(base_url: str) -> None:
        async with LLMEngine(fast_settings(base_url)) as engine:
            with pytest.raises(ConfigurationError, match=message) as caught:
                await engine.preflight(model)
            assert base_url in str(caught.value)

    start = time.monotonic()
    if faults is None:
        run(check(f"http://127.0.0.1:{_closed_port()}/v1"))
    else:
        with OpenAIStandIn(faults) as server:
            run(check(server.base_url.removesuffix("/v1") + base_path))
    assert time.monotonic() - start < 5


def test_preflight_accepts_a_listed_model_or_the_file_name_of_a_listed_path():
    with OpenAIStandIn(Faults(served_models=("/models/gemma-3-270m-q4_k_m.gguf", "gpt-x"))) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                await engine.preflight("gpt-x")
                await engine.preflight("gemma-3-270m-q4_k_m.gguf")

        run(main())


def test_structured_output_is_sent_where_accepted():
    bodies = []

    def responder(body):
        bodies.append(body)
        return "{}"

    request = ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], json_schema={"type": "object"})
    with OpenAIStandIn(responder=responder) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                return await engine.complete(request)

        run(main())
    assert bodies[0]["response_format"]["json_schema"]["schema"] == {"type": "object"}


def test_max_tokens_is_renamed_for_servers_that_require_max_completion_tokens():
    def responder(body):
        if "max_tokens" in body:
            raise ErrorReply(400, "Unsupported parameter: 'max_tokens'. Use 'max_completion_tokens' instead.")
        return f"limit {body['max_completion_tokens']}"

    request = ChatRequest(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=77)
    with OpenAIStandIn(responder=responder) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                return await engine.complete(request)

        assert run(main()).text == "limit 77"


def test_load_is_spread_over_replicas_and_a_dead_one_is_avoided():
    requests = questions(40)
    with OpenAIStandIn(Faults(latency_s=0.02)) as one, OpenAIStandIn(Faults(latency_s=0.02)) as two:

        async def main(*urls):
            async with LLMEngine(fast_settings(*urls, concurrency=8)) as engine:
                return await complete_all(engine, requests)

        run(main(one.base_url, two.base_url))
        counts = (one.stats().chat_requests, two.stats().chat_requests)
        assert sum(counts) == 40 and min(counts) >= 10
        dead = f"http://127.0.0.1:{_closed_port()}/v1"
        results = run(main(dead, one.base_url))
    assert len(results) == 40


def test_exhausted_rate_limit_headers_pause_the_next_request():
    faults = Faults(ratelimit_remaining_requests=0, ratelimit_reset_requests="300ms")
    with OpenAIStandIn(faults) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                start = time.monotonic()
                for request in questions(2):
                    await engine.complete(request)
                return time.monotonic() - start

        assert run(main()) >= 0.3


def test_requests_per_minute_budget_paces_the_senders():
    with OpenAIStandIn() as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url, rpm=600, concurrency=32)) as engine:
                start = time.monotonic()
                await complete_all(engine, questions(15))
                return time.monotonic() - start

        elapsed = run(main())  # 600/min = 10/s: a burst of 10, then 5 more at 0.1 s intervals
    assert 0.4 <= elapsed < 3


def test_cancelling_keeps_finished_answers_and_stops_the_rest(tmp_path):
    requests = questions(6)
    with OpenAIStandIn(Faults(latency_s=0.3)) as server:

        async def interrupted():
            async with LLMEngine(fast_settings(server.base_url, concurrency=2), cache=tmp_path / "c.sqlite") as engine:
                work = asyncio.ensure_future(complete_all(engine, requests))
                while engine.stats.answered < 2:
                    await asyncio.sleep(0.005)
                work.cancel()  # the first two are answered, the next two are in flight
                with pytest.raises(asyncio.CancelledError):
                    await work
                return engine.stats

        stats = run(interrupted())
        assert stats.in_flight == 0 and stats.answered == 2
        with ResponseCache(tmp_path / "c.sqlite") as cache:
            assert len(cache) == 2
        before = server.stats().chat_requests

        async def resumed():
            async with LLMEngine(fast_settings(server.base_url, concurrency=6), cache=tmp_path / "c.sqlite") as engine:
                return await complete_all(engine, requests)

        results = run(resumed())
        assert server.stats().chat_requests - before == 4
    assert sum(r.cached for r in results) == 2
