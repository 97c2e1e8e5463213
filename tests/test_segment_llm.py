"""The `llm` boundary scorer against the loopback OpenAI stand-in: windows, re-asks, fallback, cache."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
from support.openai_standin import OpenAIStandIn
from support.trace_builders import write_stage_folder
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.llm import LLMEngine, LLMSettings
from openmementos.runtime.manifest import iter_stage, read_manifest
from openmementos.schema import SegmentedTrace, SourceTrace
from openmementos.segment.llm_scorer import (
    MAX_SENTENCE_CHARS,
    LLMScorer,
    parse_scores,
    prompt_version,
    to_half_points,
    window_messages,
    windows,
)
from openmementos.segment.scorers import HeuristicScorer

MODEL = "scorer-test-model"
_MARK = re.compile(r"<<B(\d+)>>\n\[S\d+\] (.*)")
_COUNT = re.compile(r"Score the (\d+) marked boundaries, B(\d+) to B(\d+)")


def script(body: dict[str, Any]) -> str:
    """A scripted scorer: 3 before a sentence with "Alternatively", 2 with "Wait", else 1; 2 in 11-windows.

    Misbehaves on purpose: the window starting at B0 first answers with one score too few (fixed when
    re-asked); the window starting at B16 never answers JSON.
    """
    messages = body["messages"]
    count, first, _ = map(int, _COUNT.search(messages[1]["content"]).groups())  # type: ignore[union-attr]
    if first == 16 and count == 16:
        return "I think these boundaries are all fine."
    if count == 11:
        return json.dumps({"scores": [2] * count})
    starts = [text for _, text in _MARK.findall(messages[1]["content"])]
    scores = [3 if "Alternatively" in s else 2 if "Wait" in s else 1 for s in starts]
    if first == 0 and len(messages) == 2:
        scores = scores[:-1]
    return json.dumps({"scores": scores})


def sentences(count: int) -> list[str]:
    cues = ["Alternatively, try another way.\n\n", "Wait, check that.\n\n", "Then x grows by one each step.\n\n"]
    return [f"Sentence {i}. " + cues[i % 3] for i in range(count)]


@pytest.fixture(scope="module")
def server() -> Any:
    with OpenAIStandIn(responder=script) as standin:
        yield standin


def engine(server: OpenAIStandIn, cache: Path | None = None) -> LLMEngine:
    settings = LLMSettings(base_urls=(server.base_url,), api_key="sk-test", concurrency=8, backoff_initial_s=0.01)
    return LLMEngine(settings, cache=cache)


def score(server: OpenAIStandIn, texts: list[str], second: int | None = None, cache: Path | None = None) -> Any:
    async def go() -> Any:
        async with engine(server, cache) as live:
            scorer = LLMScorer(live, MODEL, 16, second)
            return await scorer.score(texts), scorer.tally

    return asyncio.run(go())


def test_parse_scores_is_strict() -> None:
    assert parse_scores('{"scores": [0, 1, 2, 3]}', 4) == [0, 1, 2, 3]
    assert parse_scores('```json\n{"scores": [3.0, 0]}\n```', 2) == [3, 0]
    assert parse_scores('{"scores": [-10, 15, 2]}', 3) == [0, 3, 2]  # a weak model's range: clamped
    for answer, problem in [
        ("no json here", "not JSON"),
        ('{"values": [1]}', 'no "scores" list'),
        ('{"scores": [1, 2]}', "2 scores for 3"),
        ('{"scores": [1, 2, 1.5]}', "1.5 is not"),
        ('{"scores": [1, true, 2]}', "True is not"),
    ]:
        with pytest.raises(ValueError, match=re.escape(problem)):
            parse_scores(answer, 3)


def test_windows_half_points_and_messages() -> None:
    assert windows(35, 16) == [range(0, 16), range(16, 32), range(32, 35)]
    assert [to_half_points(v) for v in (2.25, 1.75, 1.5, 0.0, 3.0)] == [2.5, 2.0, 1.5, 0.0, 3.0]
    texts = ["Short one. ", "x" * (MAX_SENTENCE_CHARS * 2), "Alternatively, go on. "]
    messages = window_messages(texts, range(0, 2))
    assert messages[0]["role"] == "system" and "integer" in messages[0]["content"]
    user = messages[1]["content"]
    assert "Score the 2 marked boundaries, B0 to B1." in user and "<<B0>>" in user and "<<B1>>" in user
    assert "characters omitted" in user and len(user) < MAX_SENTENCE_CHARS * 2
    assert len(prompt_version()) == 12
    with pytest.raises(ValueError, match="coprime"):
        LLMScorer(None, MODEL, 16, 12)  # type: ignore[arg-type]


def test_scores_reask_once_then_fall_back_to_the_heuristic(server: OpenAIStandIn) -> None:
    texts = sentences(40)  # 39 boundaries: windows B0-15, B16-31, B32-38
    result, tally = score(server, texts)
    heuristic = HeuristicScorer().score(texts)
    for boundary in range(39):
        if 16 <= boundary <= 31:  # never answered usably: the heuristic's scores, marked as such
            assert result.scores[boundary] == heuristic.scores[boundary]
            assert result.reasons[boundary] == f"heuristic:{heuristic.reasons[boundary]}"
        else:
            following = texts[boundary + 1]
            expected = 3 if "Alternatively" in following else 2 if "Wait" in following else 1
            assert (result.scores[boundary], result.reasons[boundary]) == (expected, "llm")
    assert (result.fallback_windows, result.windows) == (1, 3)
    assert (tally.windows, tally.reasked, tally.fallback_windows, tally.traces_with_fallback) == (3, 2, 1, 1)
    assert tally.requests == 5  # 3 windows + 2 re-asks (B0 fixed on the re-ask, B16 not)
    assert tally.prompt_tokens > 0


def test_two_coprime_passes_average_into_half_points(server: OpenAIStandIn) -> None:
    texts = sentences(23)  # 22 boundaries: windows B0-15, B16-21 and B0-10, B11-21
    result, tally = score(server, texts, second=11)
    first_pass = [3 if "Alternatively" in t else 2 if "Wait" in t else 1 for t in texts[1:]]
    assert result.scores == [to_half_points((a + 2) / 2) for a in first_pass]
    assert 2.5 in result.scores and 1.5 in result.scores
    assert (tally.windows, result.windows, result.fallback_windows) == (4, 4, 0)


def test_answers_are_cached_across_runs(server: OpenAIStandIn, tmp_path: Path) -> None:
    texts = [f"Step {i} done. Alternatively, more.\n\n" for i in range(20)]
    before = server.stats().chat_requests
    first, _ = score(server, texts, cache=tmp_path / "cache.sqlite")
    sent = server.stats().chat_requests - before
    again, tally = score(server, texts, cache=tmp_path / "cache.sqlite")
    assert sent > 0 and server.stats().chat_requests - before == sent
    assert again == first and tally.prompt_tokens == 0


def test_cli_scores_with_the_llm_and_records_provenance(server: OpenAIStandIn, tmp_path: Path) -> None:
    base = {"problem": "p", "answer": "a", "domain": "math", "source": "test"}
    reasoning = "".join(f"Part {i}: we compute the value {i} here with care.\n\n" + "Alternatively, " * (i % 4 == 0)
                        + f"Next we look at case {i} closely.\n\n" for i in range(40))  # fmt: skip
    traces = [SourceTrace(id=f"t{i}", reasoning=reasoning, **base) for i in range(3)]
    write_stage_folder(tmp_path / "in", "download", SourceTrace, [traces])
    args = ["segment", str(tmp_path / "in"), str(tmp_path / "out"), "--scorer", "llm", "--model", MODEL,
            "--base-url", server.base_url, "--api-key", "sk-test", "--cache-dir", str(tmp_path / "cache")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "LLM scoring:" in result.output and "fell back to the heuristic" in result.output
    rows = list(iter_stage(tmp_path / "out", SegmentedTrace))
    assert len(rows) == 3
    for row in rows:
        assert row.scorer.startswith(f"llm:{MODEL}:w16:p{prompt_version()}")
        assert "heuristic_windows=1/" in row.scorer  # the B16 window never answers usably
        assert "".join(row.block_texts()) == row.reasoning
    options = read_manifest(tmp_path / "out").options
    assert options["scorer"] == "llm" and options["prompt_version"] == prompt_version()
    before = server.stats().chat_requests
    again = CliRunner().invoke(app, [*args[:2], str(tmp_path / "out2"), *args[3:]])
    assert again.exit_code == 0, again.output
    assert server.stats().chat_requests == before  # every answer came from the cache
    trial = CliRunner().invoke(app, [*args[:2], str(tmp_path / "trial"), *args[3:], "--limit", "2"])
    assert trial.exit_code == 0, trial.output
    assert [t.id for t in iter_stage(tmp_path / "trial", SegmentedTrace)] == ["t0", "t1"]
    assert read_manifest(tmp_path / "trial").options["limit"] == 2
    refused = CliRunner().invoke(app, [*args, "--second-window", "8"])
    assert refused.exit_code != 0 and "coprime" in refused.output


def test_a_weak_scorer_behind_llamacpp_is_clamped_and_reasked_warmer() -> None:
    from support.openai_standin import Faults

    bodies: list[dict[str, Any]] = []

    def weak(body: dict[str, Any]) -> str:
        bodies.append(body)
        count = int(_COUNT.search(body["messages"][1]["content"]).group(1))  # type: ignore[union-attr]
        if body.get("temperature") == 0.0:
            return json.dumps({"scores": [-10, 15] + [2] * (count - 3)})  # one short, out of range
        return json.dumps({"scores": [-10, 15] + [2] * (count - 2)})

    with OpenAIStandIn(Faults(llamacpp_response_format=True), responder=weak) as standin:
        result, tally = score(standin, sentences(10))
        observed = standin.stats()
    assert observed.faults["llamacpp_response_format"] == 1 and observed.response_formats["json_object"] == 2
    assert result.scores[:2] == [0.0, 3.0] and result.fallback_windows == 0 and tally.reasked == 1
    reask = bodies[-1]
    assert (reask["seed"], reask["temperature"]) == (1, 0.3), "the re-ask is not the same request again"
    assert reask["response_format"]["schema"]["properties"]["scores"]["items"] == {
        "type": "integer",
        "enum": [0, 1, 2, 3],
    }
