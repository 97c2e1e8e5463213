"""Pure parts of the LLM engine: request keys, header parsing, prices, JSON extraction, settings."""

from __future__ import annotations

import asyncio
import gc
import json
import logging

import pytest

from openmementos.llm import (
    ChatRequest,
    ConfigurationError,
    LLMEngine,
    LLMSettings,
    MalformedAnswer,
    PriceTable,
    extract_json,
    relax_gc,
)
from openmementos.llm.limits import exhausted_quota_seconds, parse_duration, retry_after_seconds
from openmementos.llm.pricing import DEFAULT_PRICES
from openmementos.llm.settings import display_url

MESSAGES = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "2+2?"}]


def test_cache_key_depends_on_content_not_on_where_it_is_sent():
    base = ChatRequest(model="m", messages=MESSAGES)
    assert base.cache_key() == ChatRequest(model="m", messages=[dict(m) for m in MESSAGES]).cache_key()
    variants = [
        ChatRequest(model="other", messages=MESSAGES),
        ChatRequest(model="m", messages=MESSAGES[1:]),
        ChatRequest(model="m", messages=MESSAGES, temperature=0.7),
        ChatRequest(model="m", messages=MESSAGES, max_tokens=10),
        ChatRequest(model="m", messages=MESSAGES, seed=1),
        ChatRequest(model="m", messages=MESSAGES, json_schema={"type": "object"}),
        ChatRequest(model="m", messages=MESSAGES, params={"top_p": 0.9}),
    ]
    keys = {variant.cache_key() for variant in variants}
    assert len(keys) == len(variants) and base.cache_key() not in keys


def test_request_body_carries_every_parameter():
    request = ChatRequest(
        model="m", messages=MESSAGES, max_tokens=5, seed=3, json_schema={"type": "object"}, params={"top_p": 0.5}
    )
    body = request.body()
    assert body["max_tokens"] == 5 and body["seed"] == 3 and body["top_p"] == 0.5 and body["temperature"] == 0.0
    assert body["response_format"]["type"] == "json_schema"
    assert request.body(form="json_object")["response_format"] == {"type": "json_object", "schema": {"type": "object"}}
    plain = request.body(form="none", max_tokens_field="max_completion_tokens")
    assert "response_format" not in plain and plain["max_completion_tokens"] == 5 and "max_tokens" not in plain
    assert request.estimated_tokens() > 5
    with pytest.raises(ValueError, match="structured-output form"):
        request.body(form="grammar")


def test_system_messages_fold_into_the_first_user_turn():
    request = ChatRequest(model="gemma", messages=[*MESSAGES, {"role": "assistant", "content": "4"}, *MESSAGES[1:]])
    folded = request.body(system_in_user=True)["messages"]
    assert folded == [{"role": "user", "content": "Be terse.\n\n2+2?"}, {"role": "assistant", "content": "4"},
                      {"role": "user", "content": "2+2?"}]  # fmt: skip
    assert request.body()["messages"][0] == MESSAGES[0]
    assert LLMSettings(system_prompt="auto").folds_system("gemma-3-270m")
    assert not LLMSettings(system_prompt="auto").folds_system("gpt-4.1-mini")
    assert LLMSettings(system_prompt="user").folds_system("gpt-4.1-mini")
    assert LLMSettings(structured_output="json_object").structured_forms() == ("json_object",)
    with pytest.raises(ConfigurationError, match="structured_output"):
        LLMSettings(structured_output="grammar")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5), ("soon", None)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


def test_retry_after_headers():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after": "2", "retry-after-ms": "150"}) == 0.15
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({}) is None
    assert exhausted_quota_seconds({"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "2s"}) == 2.0
    assert exhausted_quota_seconds({"x-ratelimit-remaining-requests": "5", "x-ratelimit-reset-requests": "2s"}) is None
    both = {
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert exhausted_quota_seconds(both) == 360.0


def test_price_table(tmp_path, caplog):
    prices = PriceTable()
    assert prices.cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(0.75)
    assert prices.cost("gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15), "snapshots use the family"
    assert prices.cost("gpt-4o-2024-08-06", 1_000_000, 0) == pytest.approx(2.5)
    assert prices.cost("gpt-4o-mini", 1_000_000, 0, batch=True) == pytest.approx(0.075)
    with caplog.at_level(logging.WARNING):
        assert prices.cost("my-local-model", 10, 10) == 0.0
        assert prices.cost("my-local-model", 10, 10) == 0.0
    assert caplog.text.count("my-local-model") == 1
    (tmp_path / "prices.json").write_text(json.dumps({"my-local-model": {"input": 1, "output": 3}}))
    (tmp_path / "prices.yaml").write_text("gpt-4o-mini: [1, 1]\n")
    assert PriceTable.from_file(tmp_path / "prices.json").cost("my-local-model", 10**6, 10**6) == 4.0
    assert PriceTable.from_file(tmp_path / "prices.yaml").cost("gpt-4o-mini", 10**6, 10**6) == 2.0


def test_cached_prompt_tokens_are_priced_at_the_cached_rate(tmp_path):
    prices = PriceTable()
    # gpt-4.1-mini: $0.40/M input, $0.10/M cached input, $1.60/M output
    assert prices.cost("gpt-4.1-mini", 10**6, 0, cached_prompt_tokens=750_000) == pytest.approx(0.25 * 0.4 + 0.075)
    assert prices.cost("gpt-4.1-mini", 10**6, 0, cached_prompt_tokens=750_000, batch=True) == pytest.approx(0.0875)
    assert prices.cost("gpt-4.1-mini", 100, 0, cached_prompt_tokens=10**6) == pytest.approx(100 * 0.1 / 1e6), (
        "never more cached tokens than prompt tokens"
    )
    assert all(price.cached_input_per_mtok is not None for price in DEFAULT_PRICES.values())
    (tmp_path / "prices.yaml").write_text(
        "local: {input: 1, output: 2}\ncheap: {input: 1, output: 2, cached_input: 0.5}\n"
    )
    table = PriceTable.from_file(tmp_path / "prices.yaml")
    assert table.cost("local", 10**6, 0, cached_prompt_tokens=10**6) == 1.0, "no cached rate: billed as input"
    assert table.cost("cheap", 10**6, 0, cached_prompt_tokens=10**6) == 0.5
    assert PriceTable({"m": (1, 2, 0.25)}).cost("m", 10**6, 0, cached_prompt_tokens=10**6) == 0.25


@pytest.mark.parametrize(
    "text",
    [
        '{"scores": [1, 2]}',
        'Here you go:\n```json\n{"scores": [1, 2]}\n```\nDone.',
        'Sure! The answer is {"scores": [1, 2]} as requested.',
    ],
)
def test_extract_json_is_tolerant(text):
    assert extract_json(text) == {"scores": [1, 2]}


def test_extract_json_reports_what_it_got():
    with pytest.raises(MalformedAnswer, match="no JSON value"):
        extract_json("I cannot do that {not json")


def test_settings_resolve_endpoints_and_keys(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert LLMSettings().endpoints() == ("https://api.openai.com/v1",)
    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY"):
        LLMSettings().key()
    assert LLMSettings(base_urls=("http://gpu1:8000/v1/",)).endpoints() == ("http://gpu1:8000/v1",)
    assert LLMSettings(base_urls=("http://gpu1:8000/v1",)).key() == "no-key", "self-hosted servers need none"
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env-host:1234/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    assert LLMSettings().endpoints() == ("http://env-host:1234/v1",)
    assert LLMSettings().key() == "sk-from-env"
    assert LLMSettings(api_key="sk-explicit").key() == "sk-explicit"
    with pytest.raises(ConfigurationError):
        LLMSettings(base_urls=("gpu1:8000",)).endpoints()
    with pytest.raises(ConfigurationError):
        LLMSettings(concurrency=0)
    assert display_url("http://user:secret@host:8000/v1") == "http://host:8000/v1"


def test_the_engine_leaves_the_garbage_collector_to_the_program():
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, *saved[1:])

        async def build_and_close() -> None:
            await LLMEngine(LLMSettings(base_urls=("http://127.0.0.1:1/v1",))).close()

        asyncio.run(build_and_close())
        assert gc.get_threshold()[0] == 700, "a library constructor changes no process-wide setting"
        relax_gc()
        assert gc.get_threshold() == (10_000, *saved[1:])
        gc.set_threshold(50_000, *saved[1:])
        relax_gc()
        assert gc.get_threshold()[0] == 50_000, "never lowered"
    finally:
        gc.set_threshold(*saved)


def test_a_cache_written_before_cached_tokens_were_read_still_opens(tmp_path):
    import sqlite3

    from openmementos.llm.cache import CachedAnswer, ResponseCache

    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE answers (key TEXT PRIMARY KEY, text TEXT NOT NULL, prompt_tokens INTEGER NOT NULL, "
            "completion_tokens INTEGER NOT NULL, finish_reason TEXT, model TEXT NOT NULL, batch INTEGER NOT NULL, "
            "stored_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO answers VALUES ('k', 'old answer', 10, 2, 'stop', 'm', 0, 0)")
    cache = ResponseCache(path)
    assert cache.get("k") == CachedAnswer("old answer", 10, 2, "stop", "m")
    cache.put("new", CachedAnswer("new answer", 10, 2, "stop", "m", cached_prompt_tokens=8))
    assert cache.get("new").cached_prompt_tokens == 8
    cache.close()
