"""Boundary scores: how good a place to end a block is the gap after each sentence (0-3, half points).

Every scorer maps a trace's sentences to one score per boundary (the gap between sentence i and i + 1)
and a short reason per boundary, shown by `openmementos segment --explain`:

    0    poor: mid-derivation, the next sentence needs this one
    1    weak: a paragraph break with nothing more
    2    good: a step ends, a check or a case starts
    3    strong: a new approach, a restart, the conclusion

`heuristic` (default, deterministic, no LLM) applies the rules below; `llm` (llm_scorer.py) asks a model
over windows of boundaries and falls back to these rules for windows whose answers stay unusable.

Heuristic rules, in order (the first hard zero wins, otherwise base + the strongest cue, capped at 3):

| rule                | when                                                                  | score   |
|---------------------|-----------------------------------------------------------------------|---------|
| `after_colon`       | the sentence ends with `:` `=` `,` or another operator                | 0       |
| `continuation`      | the next starts with Therefore / Thus / Hence / So (not "So the answer")| 0     |
| `refutation`        | an assumption ("Suppose", "Assume", "What if", ...) then its refutation| 0      |
| `trace_step`        | both sentences are steps of one step-by-step state or code trace      | 0       |
| base `blank_line`   | a blank line separates them                                           | 1       |
| base `line_break`   | a single newline separates them                                       | 0.5     |
| base `inline`       | they share a line                                                     | 0       |
| cue `new_approach`  | Another approach/way/idea, Let me try a different ..., start over      | +2      |
| cue `conclusion`    | So/Thus/Therefore the answer, Final answer, In conclusion, To summarize | +2    |
| cue `heading`       | a markdown heading or a bold line (`# ...`, `**...**`)                | +2      |
| cue `alternative`   | Alternatively                                                          | +1.5   |
| cue `verify`        | Let me check / verify / double-check / confirm / test, Checking        | +1.5   |
| cue `new_step`      | Now, Next, First/Second/Finally, Case N, Step N, Part N                | +1.5   |
| cue `code_starts`   | code (fence or indented) after prose                                  | +1.5    |
| cue `rethink`       | Wait, But wait, Hold on                                                | +1     |
| cue `code_ends`     | prose after a closed code fence                                       | +1      |
| cue `new_thought`   | Hmm, Okay, Alright, Let me / Let's, Maybe, Perhaps, Actually, But, However, Also | +0.5 |

Calibration: 3 is for a new phase (an approach named as new, the conclusion, a heading), as in the
rubric. Reasoning models write "Alternatively," every ~500 tokens and "Wait" every ~200 (QwQ-32B on the
public example trace: 24 and 60 in 12K tokens), mostly for a local variation or correction, so they score
2.5 and 2 after a blank line. Since the published objective adds a block only for a cut above its mean
cut score, the number of 3s sets the block count: with these weights the public example trace gets 11
blocks of ~1,130 tokens (published: ~9 of ~1,150); with "Alternatively" at 3 and "Wait" at 2.5 it got
20 of ~620.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

MAX_SCORE = 3.0


@dataclass(frozen=True)
class BoundaryScores:
    """One score (0-3, half points) and one reason per boundary.

    For the LLM scorer: `windows` requests-worth of boundaries, of which `fallback_windows` were scored
    by the heuristic because the LLM's answers stayed unusable.
    """

    scores: list[float]
    reasons: list[str]
    fallback_windows: int = 0
    windows: int = 0


class BoundaryScorer(Protocol):
    """Scores the n - 1 boundaries between n sentences. `name` is recorded in every output row.

    Synchronous and self-contained, so it runs in worker processes (the heuristic rules).
    """

    name: str

    def score(self, sentences: Sequence[str], problem: str = "") -> BoundaryScores: ...


class AsyncBoundaryScorer(Protocol):
    """A scorer that waits on a service (the LLM scorer): awaited on the engine's event loop."""

    async def score(self, sentences: Sequence[str], problem: str = "") -> BoundaryScores: ...


# --------------------------------------------------------------------------- the heuristic rules

_CONTINUATION = re.compile(r"(?:therefore|thus|hence|so)\b(?!,? (?:the )?(?:final )?answer)", re.IGNORECASE)
_ASSUMPTION = re.compile(
    r"\b(?:suppose|assume|assuming|let's say|let us say|what if|if we assume|let's assume|maybe it's)\b", re.IGNORECASE
)
_REFUTATION = re.compile(
    r"(?:but (?:that|this|then)|however|no[,.]|that can't|that cannot|"
    r"that's (?:impossible|not possible|a contradiction)|this (?:contradicts|is a contradiction|can't)|"
    r"contradiction|wait,? no\b|that doesn't work|impossible)",
    re.IGNORECASE,
)
# A line of a step-by-step state trace: "Step 3: ...", "i = 2: ...", "n=5 -> ...", "dp[3] = ...".
_TRACE_STEP = re.compile(
    r"(?:[-*•]\s*)?(?:(?:step|iteration|iter|round|turn|move|day|pass|level)\s*\d|"
    r"(?:[a-z]|lo|hi|mid|left|right|dp|sum|count|ans|res)\s*(?:\[[^\]]{1,12}\]\s*)?=\s*-?\d)",
    re.IGNORECASE,
)
_OPERATOR_ENDINGS = (":", "=", ",", "+", "-", "*", "/", "\\times", "\\cdot", "→", "⇒")
_MARKUP = re.compile(r"[\s>*#_`-]*")  # leading markdown to skip before matching cues


@dataclass(frozen=True)
class Cue:
    """A phrase that opens a new phase of reasoning (matched case-insensitively after leading markup)."""

    name: str
    bonus: float
    pattern: str


CUES: tuple[Cue, ...] = (
    Cue(
        "new_approach",
        2.0,
        (
            r"(?:another (?:approach|way|idea|method|strategy|thought|possibility)|"
            r"(?:a )?different (?:approach|way|method|idea)|"
            r"(?:let me|let's|i(?:'ll| will)) (?:try|use|consider|take|think of) "
            r"(?:a different|another|a new|a better|a cleaner|a smarter)|(?:let me|let's) (?:start over|restart|"
            r"re-?approach|approach this|think differently|think about this differently|step back)|start(?:ing)? over|"
            r"new approach|on second thought)"
        ),
    ),
    Cue(
        "conclusion",
        2.0,
        (
            r"(?:(?:so|thus|therefore|hence),? (?:the )?(?:final )?answer|(?:the )?final answer|in conclusion|"
            r"to (?:summarize|sum up|conclude)|putting (?:it|this|everything) (?:all )?together|in summary|"
            r"the answer (?:is|should be))"
        ),
    ),
    Cue("alternative", 1.5, r"alternatively\b"),
    Cue(
        "verify",
        1.5,
        (
            r"(?:(?:let me|let's|let us|i(?:'ll| should| need to)|now,? let me|now,? let's) (?:also )?(?:check|verify|"
            r"double[- ]?check|confirm|re-?check|test|validate|sanity[- ]check|plug)|(?:to|just to) (?:verify|check|"
            r"confirm|double[- ]check)|checking|verification|double[- ]checking|sanity check)"
        ),
    ),
    Cue(
        "new_step",
        1.5,
        (
            r"(?:now\b|next\b|first(?:ly)?,|second(?:ly)?,|third(?:ly)?,|finally,|lastly,|case \d|case [ivx]+\b|"
            r"sub-?case|step \d|part \(?[a-z0-9]\)?[:.]|moving on|let's move on|on to)"
        ),
    ),
    Cue(
        "rethink",
        1.0,
        r"(?:wait|but wait|hold on|hmm+,? wait|oh wait|hang on)\b",
    ),
    Cue(
        "new_thought",
        0.5,
        (r"(?:hmm+|okay|ok\b|alright|all right|let me|let's|let us|maybe|perhaps|actually|but\b|however|also\b)"),
    ),
)

# All cues in one alternation, strongest first: the first alternative that matches names the cue.
_CUE_SCANNER = re.compile("|".join(f"(?P<{cue.name}>{cue.pattern})" for cue in CUES), re.IGNORECASE)
_BONUS = {cue.name: cue.bonus for cue in CUES}
HEADING = Cue("heading", 2.0, r"(?:#{1,6} |\*\*[^*\n]{1,80}\*\*\s*$)")
_HEADING = re.compile(HEADING.pattern, re.MULTILINE)

_BASES = {"blank_line": 1.0, "line_break": 0.5, "inline": 0.0}


def _gap(sentence: str) -> str:
    """How the sentence is separated from the next: by a blank line, a line break or a space."""
    trailing = sentence[len(sentence.rstrip()) :]
    newlines = trailing.count("\n")
    return "blank_line" if newlines >= 2 else "line_break" if newlines == 1 else "inline"


def _is_code(sentence: str) -> bool:
    return sentence.lstrip(" \t\n").startswith(("```", "~~~")) or sentence.startswith(("    ", "\t"))


def hard_zero(previous: str, following: str) -> str | None:
    """The name of the SPEC 4.3 rule that forbids a cut between these sentences, if any."""
    before, after = previous.strip(), following.strip()
    if before.endswith(_OPERATOR_ENDINGS):
        return "after_colon"
    if _CONTINUATION.match(after):
        return "continuation"
    if _REFUTATION.match(after) and _ASSUMPTION.search(before):
        return "refutation"
    if _TRACE_STEP.match(after) and _TRACE_STEP.match(before):
        return "trace_step"
    return None


def heuristic_score(previous: str, following: str) -> tuple[float, str]:
    """The score of the boundary between two sentences and the rule(s) that gave it."""
    if zero := hard_zero(previous, following):
        return 0.0, zero
    gap = _gap(previous)
    cue, bonus = None, 0.0
    if _is_code(following):
        if not _is_code(previous):
            cue, bonus = "code_starts", 1.5
    elif previous.rstrip().endswith(("```", "~~~")):
        cue, bonus = "code_ends", 1.0
    words = _CUE_SCANNER.match(following, _MARKUP.match(following).end())  # type: ignore[union-attr]
    if words is not None and _BONUS[words.lastgroup] > bonus:  # type: ignore[index]
        cue, bonus = words.lastgroup, _BONUS[words.lastgroup]  # type: ignore[index]
    if bonus < HEADING.bonus and _HEADING.match(following, len(following) - len(following.lstrip())):
        cue, bonus = HEADING.name, HEADING.bonus
    return min(_BASES[gap] + bonus, MAX_SCORE), f"{gap}+{cue}" if cue else gap


class HeuristicScorer:
    """The rules in this module's docstring: deterministic, no LLM, microseconds per boundary."""

    name = "heuristic"

    def score(self, sentences: Sequence[str], problem: str = "") -> BoundaryScores:
        scored = [heuristic_score(a, b) for a, b in itertools.pairwise(sentences)]
        return BoundaryScores([s for s, _ in scored], [r for _, r in scored])
