"""Reading compressor, judge and refiner answers: tolerant, but never inventing or shifting a memento."""

from __future__ import annotations

import json

import pytest

from openmementos.annotate.parsing import (
    FIX_MAX_CHARS,
    MAX_FIXES,
    RUBRIC,
    VERDICT_SCHEMA,
    mementos_schema,
    parse_mementos,
    parse_refined,
    parse_verdict,
)
from openmementos.llm import MalformedAnswer
from openmementos.mementos import is_placeholder, memento_problems


def broken_rules(text: str) -> list[str]:
    return [rule for rule, _ in memento_problems(text, None, None)]


def answer(*items: tuple[int, str]) -> str:
    return json.dumps({"mementos": [{"id": key, "memento": text} for key, text in items]})


def test_the_requested_shape() -> None:
    parsed = parse_mementos(answer((1, "x = 2."), (2, "y = 3.")), [1, 2])
    assert parsed.usable == {1: "x = 2.", 2: "y = 3."} and parsed.problems == {}


def test_a_missing_id_is_named_and_nothing_shifts() -> None:
    parsed = parse_mementos(answer((1, "a"), (3, "c")), [1, 2, 3])
    assert parsed.usable == {1: "a", 3: "c"}
    assert parsed.problems == {2: "missing"}


def test_positional_answers_align_only_when_the_count_is_right() -> None:
    assert parse_mementos('["a", "b"]', [4, 5]).usable == {4: "a", 5: "b"}
    short = parse_mementos('["a", "b"]', [1, 2, 3])
    assert short.usable == {} and set(short.problems) == {1, 2, 3}


def test_json_in_fences_prose_and_id_keyed_objects() -> None:
    fenced = "Sure, here they are:\n```json\n" + answer((1, "a"), (2, "b")) + "\n```\nDone."
    assert parse_mementos(fenced, [1, 2]).usable == {1: "a", 2: "b"}
    assert parse_mementos('{"1": "a", "2": "b"}', [1, 2]).usable == {1: "a", 2: "b"}
    prose = 'The list is {"mementos": [{"id": "2", "memento": "b"}]} as asked.'
    assert parse_mementos(prose, [2]).usable == {2: "b"}


def test_a_truncated_answer_keeps_its_complete_items() -> None:
    cut = answer((1, "a"), (2, "b"), (3, "ccc"))[:-12]
    parsed = parse_mementos(cut, [1, 2, 3])
    assert parsed.usable == {1: "a", 2: "b"} and parsed.problems == {3: "missing"}


def test_parsing_finds_the_texts_and_the_memento_rules_judge_them() -> None:
    parsed = parse_mementos(
        answer((1, "  "), (2, "N/A"), (3, "x <|summary_end|>"), (4, "[summary unavailable]")), [1, 2, 3, 4]
    )
    assert parsed.problems == {}
    assert {key: broken_rules(text) for key, text in parsed.usable.items()} == {
        1: ["memento_empty"],
        2: ["memento_placeholder"],
        3: ["memento_reserved"],
        4: ["memento_placeholder"],
    }
    unreadable = parse_mementos("no json at all", [1])
    assert unreadable.problems == {1: "missing: no memento list could be read from the answer"}


def test_raw_newlines_inside_strings_are_read_and_the_rules_then_refuse_the_junk() -> None:
    # Gemma 3 270M under llama.cpp's json_object grammar wrote exactly this: control characters in strings.
    gemma = '{ "mementos": [{"id": 1, "memento": "...},\n  {" },{ "id": 2, "memento": "...},\n  {" }]}'
    parsed = parse_mementos(gemma, [1, 2])
    assert parsed.usable == {1: "...},\n  {", 2: "...},\n  {"} and parsed.problems == {}
    assert "memento_placeholder" in broken_rules(parsed.usable[1])


@pytest.mark.parametrize("text", ["N/A", "...", "TODO", "[Summary not available]", "<memento>", "Memento 3", "none"])
def test_placeholders(text: str) -> None:
    assert is_placeholder(text) and broken_rules(text) == ["memento_placeholder"]


@pytest.mark.parametrize("text", ["x = 4; none of the roots is real.", "Summary of cases: n even -> 0.", "a = 1."])
def test_real_mementos_are_not_placeholders(text: str) -> None:
    assert broken_rules(text) == []


def test_verdict_score_is_the_clamped_rubric_sum_minus_deduction() -> None:
    full = {name: top for name, top in RUBRIC.items()}
    verdict = parse_verdict(json.dumps({**full, "deduction": 2.5, "fixes": ["add x_1 = 3", "cut narration"]}))
    assert verdict.score == 7.5
    assert verdict.feedback == "- add x_1 = 3\n- cut narration"
    inflated = {**{name: 99 for name in RUBRIC}, "deduction": -5, "fixes": []}
    assert parse_verdict(json.dumps(inflated)).score == 10.0


def test_verdict_fallbacks() -> None:
    assert parse_verdict('{"score": 6, "feedback": "- a\\n- b"}').fixes == ["a", "b"]
    assert parse_verdict("Score: 7/10\n- quote the formula\n- lead with the result").score == 7.0
    with pytest.raises(MalformedAnswer):
        parse_verdict("I would rather not grade this.")


def test_a_verdict_cut_at_its_token_limit_is_used_when_its_rubric_is_whole() -> None:
    looping = json.dumps({**RUBRIC, "deduction": 1, "fixes": ["quote x_1"] * 400})[:1500]
    verdict = parse_verdict(looping, cut_at_limit=True)
    assert verdict.score == 9.0 and verdict.fixes == ["quote x_1"]  # repeats dropped
    many = json.dumps({**RUBRIC, "deduction": 0, "fixes": [f"fix {i}" for i in range(9)]})
    assert len(parse_verdict(many).fixes) == MAX_FIXES
    with pytest.raises(MalformedAnswer, match="cut at the token limit"):
        parse_verdict('{"formulas": 3, "values": 2, "meth', cut_at_limit=True)
    with pytest.raises(MalformedAnswer, match="rubric lacks method, verification"):
        parse_verdict('{"formulas": 3, "values": 2, "confirmed": 1, "result_first": 1, "fixes": []}')


def test_out_of_range_values_are_clamped_and_a_bare_score_out_of_range_is_refused() -> None:
    wild = {**RUBRIC, "method": 45, "values": -3, "deduction": 0, "fixes": ["lead with the result"]}
    assert parse_verdict(json.dumps(wild)).score == 8.0
    with pytest.raises(MalformedAnswer, match="score 45 is out of range"):
        parse_verdict('{"score": 45, "fixes": []}')
    with pytest.raises(MalformedAnswer, match="out of range"):
        parse_verdict("Score: 70/10")


def test_schemas_are_tight_enough_for_a_grammar() -> None:
    schema = mementos_schema([2, 5])
    listed = schema["properties"]["mementos"]
    assert (listed["minItems"], listed["maxItems"]) == (2, 2)
    assert listed["items"]["properties"]["id"]["enum"] == [2, 5]
    assert listed["items"]["properties"]["memento"]["minLength"] >= 8
    fixes = VERDICT_SCHEMA["properties"]["fixes"]
    assert fixes["maxItems"] == MAX_FIXES and fixes["items"]["maxLength"] == FIX_MAX_CHARS
    assert VERDICT_SCHEMA["properties"]["method"] == {"type": "integer", "minimum": 0, "maximum": 2}


def test_refined_memento() -> None:
    assert parse_refined('{"memento": " x = 2. "}') == "x = 2."
    assert parse_refined("x = 2 by elimination.") == "x = 2 by elimination."
    with pytest.raises(MalformedAnswer):
        parse_refined('{"memento": "x')  # a JSON object cut short: no text to take
    assert broken_rules(parse_refined('{"memento": "N/A"}')) == ["memento_placeholder"]  # the recipe rejects it


RUBRIC_FULL = {"formulas": 3, "values": 2, "method": 2, "verification": 1, "confirmed": 1, "result_first": 1}


def test_per_trace_verdicts_by_block_number_salvaged_and_clamped() -> None:
    from openmementos.annotate.parsing import parse_verdicts, verdicts_schema

    items = [
        {"id": 2, **RUBRIC_FULL, "deduction": 1, "fixes": ["a"]},
        {"id": 1, **RUBRIC_FULL, "method": 45, "deduction": 0, "fixes": ["b"]},  # clamped: 2 points at most
        {"id": 3, "formulas": 1},  # rubric incomplete
    ]
    answer = parse_verdicts(json.dumps({"verdicts": items}), [1, 2, 3, 4])
    assert {key: v.score for key, v in answer.verdicts.items()} == {1: 10.0, 2: 9.0}
    assert answer.problems == {
        3: "its rubric lacks values, method, verification, confirmed, result_first",
        4: "no verdict",
    }
    looping = json.dumps({"verdicts": [{"id": 1, **RUBRIC_FULL, "deduction": 2, "fixes": ["same"] * 500}]})
    cut = parse_verdicts(looping[:400], [1, 2], cut_at_limit=True)
    assert cut.verdicts[1].score == 8.0 and cut.verdicts[1].fixes == ["same"], "the verdict being written is salvaged"
    assert cut.problems == {2: "no verdict (the answer was cut at its token limit)"}
    no_deduction = json.dumps({"verdicts": [{"id": 1, **RUBRIC_FULL, "deduction": 2}]})
    assert parse_verdicts(no_deduction[: no_deduction.index('"deduction"')], [1], True).problems == {
        1: "no verdict (the answer was cut at its token limit)"
    }, "a verdict cut before its deduction is not taken at full marks"
    compact = {"id": 1, "points": [3, 2, 2, 1, 1, 1], "deduction": 2, "fixes": ["same"] * 500}
    cut_compact = parse_verdicts(json.dumps({"verdicts": [compact]})[:300], [1], cut_at_limit=True)
    assert cut_compact.verdicts[1].score == 8.0, "the compact form (points in rubric order) is salvaged too"
    wild = {"id": 2, "points": [3, -3, 45, 1, 1, 1], "deduction": 0, "fixes": []}
    assert parse_verdicts(json.dumps({"verdicts": [wild]}), [2]).verdicts[2].score == 8.0, "each point clamped"
    schema = verdicts_schema([1, 2])["properties"]["verdicts"]
    assert schema["minItems"] == schema["maxItems"] == 2 and schema["items"]["properties"]["id"]["enum"] == [1, 2]
