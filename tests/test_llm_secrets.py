"""The API key never reaches error messages, logs, the response cache or the batch ledger."""

from __future__ import annotations

import logging
import traceback

import pytest
from support.llm_helpers import complete_all, fast_settings, questions, run
from support.openai_standin import FaultRule, Faults, OpenAIStandIn

from openmementos.llm import BatchEngine, LLMEngine, LLMSettings, RetriesExhausted, redact
from openmementos.llm.batch import LEDGER_FILENAME

CANARY = "sk-LEAKCANARY-0123456789abcdefXYZ"


def _assert_clean(text: str) -> None:
    assert CANARY not in text
    assert "LEAKCANARY" not in text


def test_the_key_is_not_in_errors_logs_or_state(tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    caplog.set_level(logging.DEBUG)
    cache_path = tmp_path / "state" / "llm_cache.sqlite"
    with OpenAIStandIn(Faults(echo_auth_in_errors=True, server_error=FaultRule(first=2))) as server:
        settings = fast_settings(server.base_url, api_key=None, max_attempts=2)

        async def main():
            async with LLMEngine(settings, cache=cache_path) as engine:
                with pytest.raises(RetriesExhausted) as caught:
                    await engine.complete(questions(1, "failing")[0])
                results = await complete_all(engine, questions(5))
                return caught.value, engine, results

        error, engine, results = run(main())

        async def batch():
            async with BatchEngine(settings, cache=cache_path, poll_interval_s=0.02, flush_idle_s=0.02) as engine:
                return await complete_all(engine, questions(3, "batched"))

        run(batch())
        assert server.stats().auth_headers == {f"Bearer {CANARY}"}, "the key was really sent"
    assert "The server had an error for credentials" in str(error)
    _assert_clean(str(error))
    _assert_clean(repr(error))
    _assert_clean("".join(traceback.format_exception(error)))
    _assert_clean(repr(settings) + repr(engine))
    assert "HTTP Request" in caplog.text, "the client's own debug logs were captured"
    _assert_clean(caplog.text)
    assert len(results) == 5
    state_files = list(cache_path.parent.iterdir())
    assert {path.name for path in state_files} >= {"llm_cache.sqlite", LEDGER_FILENAME}
    for path in state_files:
        _assert_clean(path.read_bytes().decode("latin-1"))


def test_redact_masks_keys_and_bearer_tokens():
    text = f"bad key {CANARY} in header Authorization: Bearer abc.def and api_key=hunter2"
    cleaned = redact(text, ["hunter2"])
    _assert_clean(cleaned)
    assert "abc.def" not in cleaned and "hunter2" not in cleaned


def test_a_short_key_does_not_garble_messages():
    message = "test: expected a JSON object; the server said 'x' is not a model"
    assert redact(message, ["x"]) == message  # a one-character --api-key masks nothing by value
    assert redact("key sk-short-but-real-key in text", ["sk-short-but-real-key"]) == "key *** in text"
    assert redact("Authorization: Bearer x", ["x"]) == "Authorization: ***"


def test_settings_repr_hides_the_key():
    assert CANARY not in repr(LLMSettings(api_key=CANARY))
