"""The heuristic boundary scorer: SPEC 4.3's hard zeros and the phase-change cues."""

from __future__ import annotations

import pytest

from openmementos.segment.scorers import HeuristicScorer, heuristic_score


@pytest.mark.parametrize(
    ("previous", "following", "score", "reason"),
    [
        ("Multiply both sides by four:\n\n", "Then x = 3 follows.", 0.0, "after_colon"),
        ("So we get x + y =\n\n", "12 and we are done.", 0.0, "after_colon"),
        ("We found the sum is 42.\n\n", "Therefore the mean is 7 over six terms.", 0.0, "continuation"),
        ("We found the sum is 42.\n\n", "So x is 3 here.", 0.0, "continuation"),
        ("Suppose the sequence is bounded by 10.\n\n", "But that contradicts the growth we saw.", 0.0, "refutation"),
        ("Step 3: x = 12, y = 4.\n", "Step 4: x = 16, y = 5.\n", 0.0, "trace_step"),
        ("i = 2: sum = 5\n", "i = 3: sum = 9\n", 0.0, "trace_step"),
        ("We found the sum is 42.\n\n", "Another approach: count the complement.", 3.0, "blank_line+new_approach"),
        ("We found the sum is 42.\n\n", "Let me start over with a cleaner setup.", 3.0, "blank_line+new_approach"),
        ("We found the sum is 42.\n\n", "Alternatively, count the complement.", 2.5, "blank_line+alternative"),
        ("We found the sum is 42.\n\n", "So the answer is 42.", 3.0, "blank_line+conclusion"),
        ("We found the sum is 42.\n\n", "**Final Answer**\n", 3.0, "blank_line+conclusion"),
        ("We found the sum is 42.\n\n", "## Checking the edge cases\n", 3.0, "blank_line+heading"),
        ("We found the sum is 42.\n\n", "Wait, the second term was wrong.", 2.0, "blank_line+rethink"),
        ("We found the sum is 42.\n\n", "Hmm, wait. The second term was wrong.", 2.0, "blank_line+rethink"),
        ("We found the sum is 42.\n\n", "Let me verify with n = 2.", 2.5, "blank_line+verify"),
        ("We found the sum is 42.\n\n", "Case 2: n is odd.", 2.5, "blank_line+new_step"),
        ("We found the sum is 42.\n\n", "Now the second part of the problem.", 2.5, "blank_line+new_step"),
        ("Here is the plan in prose.\n\n", "```python\nprint(1)\n```\n", 2.5, "blank_line+code_starts"),
        ("```python\nprint(1)\n```\n\n", "That prints one as expected.", 2.0, "blank_line+code_ends"),
        ("We found the sum is 42.\n\n", "Hmm, that seems large.", 1.5, "blank_line+new_thought"),
        ("We found the sum is 42.\n\n", "The product is 9.", 1.0, "blank_line"),
        ("We found the sum is 42.\n", "The product is 9.", 0.5, "line_break"),
        ("We found the sum is 42. ", "The product is 9.", 0.0, "inline"),
        ("We found the sum is 42. ", "Wait, that is wrong.", 1.0, "inline+rethink"),
    ],
)
def test_rules(previous: str, following: str, score: float, reason: str) -> None:
    assert heuristic_score(previous, following) == (score, reason)


def test_scores_are_half_points_in_range_and_deterministic() -> None:
    sentences = ["Okay, let me start.\n\n", "Wait, no.\n\n", "Alternatively, try x = 2.\n", "So x = 2.\n\n", "Done."]
    first = HeuristicScorer().score(sentences)
    assert first == HeuristicScorer().score(sentences)
    assert len(first.scores) == len(sentences) - 1 == len(first.reasons)
    assert all(0 <= s <= 3 and (2 * s).is_integer() for s in first.scores)
    assert first.fallback_windows == 0
    assert HeuristicScorer().score(["Only one sentence."]).scores == []
