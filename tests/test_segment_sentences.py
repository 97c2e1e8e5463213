"""The sentence splitter: lossless spans, structure-aware cuts, merged fragments."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmementos.sentences import split_sentences

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "ot3_example_trace.jsonl"


def sentences(text: str) -> list[str]:
    spans = split_sentences(text)
    assert "".join(text[start:end] for start, end in spans) == text
    return [text[start:end] for start, end in spans]


def assert_tiles(text: str) -> None:
    spans = split_sentences(text)
    cursor = 0
    for start, end in spans:
        assert start == cursor and end > start
        cursor = end
    assert cursor == len(text)


# Text built from the characters the splitter reacts to, so the properties reach its edge cases.
_STRUCTURE = st.sampled_from(
    ["\n", "\n\n", " ", ".", "!", "?", ":", ",", "=", "(", ")", "[", "]", "{", "}", "$", "$$", "\\(", "\\)",
     "\\[", "\\]", "```", "    ", "\t", "e.g.", "1.", "Wait", "So", "Hmm.", "x", "The", "the", "\\begin{a}",
     "\\end{a}", "é", "数", "🙂", "\r\n", "- ", "1. ", "a) ", "Or", "Because", "where", "Case 2:", "So the answer"]
)  # fmt: skip


@given(st.text())
@settings(max_examples=300, deadline=None)
def test_spans_tile_arbitrary_unicode(text: str) -> None:
    assert_tiles(text)


@given(st.lists(st.one_of(_STRUCTURE, st.text(max_size=12)), max_size=60).map("".join))
@settings(max_examples=400, deadline=None)
def test_spans_tile_structured_text(text: str) -> None:
    assert_tiles(text)


def test_empty_and_blank_text() -> None:
    assert split_sentences("") == []
    assert split_sentences(" \n\n ") == [(0, 4)]


def test_sentence_ends_and_whitespace_stay_with_the_sentence() -> None:
    text = "The first approach is to expand everything.  The second approach uses symmetry instead."
    assert sentences(text) == [
        "The first approach is to expand everything.  ",
        "The second approach uses symmetry instead.",
    ]


def test_indentation_after_a_newline_starts_the_next_sentence() -> None:
    text = "We define the helper function below first.\n    x = compute(1)\n    y = x + 2\nThat is the helper we need."
    parts = sentences(text)
    assert parts[0] == "We define the helper function below first.\n"
    assert parts[1].startswith("    x = compute(1)\n    y = x + 2\n")


def test_no_split_at_decimals_abbreviations_urls_and_file_names() -> None:
    text = (
        "Consider the value 3.14 and, e.g. the file main.py, i.e. the entry point, vs. the test in Fig. 2 today. "
        "Next we look at http://example.org/a.b.html and Eq. 4 for the rest of the derivation."
    )
    assert len(sentences(text)) == 2


@pytest.mark.parametrize(
    "math",
    [
        "\\( a. B \\)",
        "$a. B$",
        "$$\nx = 1.\n\nY = 2.\n$$",
        "\\[\nx = 1.\n\nY = 2.\n\\]",
        "\\begin{align}\nx &= 1.\n\nY &= 2.\n\\end{align}",
    ],
)
def test_no_split_inside_math(math: str) -> None:
    text = f"We need to evaluate this carefully now, look: {math} is something we know well. Then more text here."
    assert any(math in part for part in sentences(text))


def test_no_split_inside_code_fences_or_indented_code() -> None:
    fence = "```python\nx = 1. \n\nprint(x)\n```"
    indented = "    total = 0.\n\n    Return total. Done.\n"
    text = f"Here is the code that we need to run now.\n\n{fence}\n\nAnd here is more of it to run.\n\n{indented}"
    parts = sentences(text)
    assert any(fence in part for part in parts)
    assert any(indented in part for part in parts)


def test_no_split_inside_brackets_until_a_blank_line() -> None:
    text = "The bound holds (see the earlier lemma. It Covers this case) for every n we consider here. "
    assert len(sentences(text)) == 1
    unclosed = "An unclosed bracket (starts here and never ends in this paragraph.\n\nA new paragraph is still new."
    assert len(sentences(unclosed)) == 2


def test_blank_line_is_a_boundary_and_list_markers_are_not() -> None:
    text = (
        "These are the steps to do in order here, one by one.\n\n1. Do the first thing here carefully.\n"
        "2. Do the second thing here carefully.\n\nDone with all of the steps listed above now."
    )
    assert sentences(text) == [
        "These are the steps to do in order here, one by one.\n\n",
        "1. Do the first thing here carefully.\n2. Do the second thing here carefully.\n\n",
        "Done with all of the steps listed above now.",
    ]


def test_list_items_join_their_lead_in_and_each_other() -> None:
    text = (
        "We need to check three conditions for this:\n- the sum is even and positive.\n"
        "- The product is a square number.\n* Each term is below ten.\n\nNow we check them one at a time."
    )
    assert sentences(text) == [
        "We need to check three conditions for this:\n- the sum is even and positive.\n"
        "- The product is a square number.\n* Each term is below ten.\n\n",
        "Now we check them one at a time.",
    ]
    # Items apart by blank lines are steps of their own (each may end a block).
    spaced = "1. Compute the first sum over all the terms.\n\n2. Compute the second sum over all the terms."
    assert len(sentences(spaced)) == 2


def test_wrapped_prose_continues_on_the_next_line() -> None:
    text = (
        "This sentence is wrapped over\nseveral lines of text and only\nends here. The next one is new and long enough."
    )
    assert len(sentences(text)) == 2


def test_merges_colon_operator_continuation_and_tiny_pieces() -> None:
    colon = "Multiply both sides by the common denominator:\n\n\\( 4x = 12 \\)\n\n"
    assert sentences(colon + "Now the rest of the work follows from this.") == [
        colon,
        "Now the rest of the work follows from this.",
    ]
    opener = "Wait.\n\nLet me reconsider the whole approach from scratch now."
    assert len(sentences(opener)) == 1
    trailing = "This is the whole computation we needed to do here.\n\nYes."
    assert len(sentences(trailing)) == 1
    short = "We try the substitution that removes the square root. Let me see.\n\nIt gives a cubic in u."
    assert sentences(short) == [
        "We try the substitution that removes the square root. ",
        "Let me see.\n\nIt gives a cubic in u.",
    ]
    operator = "The left side expands to a long sum \\( x^2 + 2x + 1 \\)\n= (x + 1)^2 and that is a square."
    assert len(sentences(operator)) == 1


@pytest.mark.parametrize(
    "follower",
    [
        "So the mean is seven over the six terms.",
        "Therefore, the mean is seven.",
        "Thus we get seven for the mean.",
        "Hence the mean is seven.",
        "Then we divide it by six.",
        "Substituting back, the mean is seven.",
        "Or maybe the mean is not what we want here.",
        "Because each of the six terms is positive.",
        "Where n is the number of terms we have.",
        "Yes, that matches the count from before.",
    ],
)
def test_continuation_starts_join_their_predecessor_even_across_a_blank_line(follower: str) -> None:
    lead = "We find that the sum is forty two exactly."
    for gap in (" ", "\n", "\n\n"):
        assert len(sentences(lead + gap + follower)) == 1, gap


def test_stating_the_answer_is_not_a_continuation() -> None:
    text = "We find that the sum is forty two exactly.\n\nSo the answer is 42, the sum of all the terms."
    assert len(sentences(text)) == 2


def test_formula_lines_join_the_text_that_leads_to_them() -> None:
    text = (
        "From the first equation we get an expression for x.\n\nFrom Eq1: x = 3y + 2\n\n"
        "\\( y^2 = 4 \\)\n\nThat leaves two cases to look at."
    )
    assert sentences(text) == [
        "From the first equation we get an expression for x.\n\nFrom Eq1: x = 3y + 2\n\n\\( y^2 = 4 \\)\n\n",
        "That leaves two cases to look at.",
    ]
    # A case or step label is a new step, and code is never a formula line.
    label = "We look at the parity of n first of all here.\n\nCase 2: n = 2k + 1"
    assert len(sentences(label)) == 2
    code = "We define the helper function below first.\n\n    x = compute(1)\n    y = x + 2\n"
    assert len(sentences(code)) == 2


def test_linear_time() -> None:
    import time

    unit = "Let me compute \\( x^2 + 1 \\) for the value x = 3.5 here (as before). Wait, that is ten.\n\n"
    small, large = unit * 200, unit * 2000
    started = time.perf_counter()
    split_sentences(small)
    small_time = time.perf_counter() - started
    started = time.perf_counter()
    split_sentences(large)
    large_time = time.perf_counter() - started
    assert large_time < 30 * max(small_time, 1e-4)


def _fixture_reasoning() -> str:
    if not FIXTURE.exists():
        pytest.skip(f"fixture {FIXTURE} is absent")
    row = json.loads(FIXTURE.read_text().splitlines()[0])
    cot = row["cot"]
    return cot[cot.index("<think>") + len("<think>") : cot.index("</think>")]


def test_fixture_trace_no_cut_inside_math() -> None:
    text = _fixture_reasoning()
    spans = split_sentences(text)
    assert "".join(text[start:end] for start, end in spans) == text
    cuts = {start for start, _ in spans[1:]}
    math = list(re.finditer(r"\\\(.*?\\\)|\\\[.*?\\\]|\$\$.*?\$\$", text, re.DOTALL))
    assert math, "the fixture has inline math"
    for region in math:
        assert not any(region.start() < cut < region.end() for cut in cuts), region.group()
    # The published splitter gives 231 sentences on this trace (rewriting a third of them): within 25 %.
    assert 0.75 * 231 <= len(spans) <= 1.25 * 231
