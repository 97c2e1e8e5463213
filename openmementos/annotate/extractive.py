"""The offline annotator (`--model extractive`): deterministic mementos without an LLM.

A memento here is a selection of the block's own statements, so nothing is invented (SPEC 4.5 asks for
extractive mementos anyway). The block is cut into units: lines, then sentences; a displayed equation
spread over lines stays whole, and a unit ending in ":" travels with its follower. Each unit is scored
for what a reader resuming the work needs: the final answer, conclusions, equations and assignments,
numeric results, rejected approaches, checks, the chosen method, definitions. Filler ("Hmm.", "Let me
see."), open questions and hedged musings score low, and a unit that restates an already chosen one is
skipped. The best units are taken until the length budget (~15 % of the block's tokens, at most 20 %)
is spent (a valuable unit too long for what is left is cut down to its best clauses), cleaned (LaTeX to
ASCII math, filler openers and connectives cut) and written result-first: the strongest conclusion,
then the rest in reading order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openmementos.annotate.asciimath import has_math, to_ascii_math
from openmementos.format import find_reserved
from openmementos.schema import AnnotatedTrace, SegmentedTrace, Usage
from openmementos.tokens import DEFAULT_ENCODING, count_tokens

EXTRACTIVE_MODEL = "extractive"
EXTRACTIVE_VERSION = "extractive-2"
"""Recorded as `prompt_version` in rows this annotator wrote; bump it when the output changes."""

TARGET_RATIO = 0.15
MAX_RATIO = 0.20
MIN_TOKENS = 24
MAX_DISPLAY_LINES = 12
MIN_SCORE = 1.0
"""Units worth less (nothing but their position) are left out even when the budget has room."""
MIN_CLAUSE_TOKENS = 8
MIN_CONDENSE_SCORE = 3.0
"""Only units worth this much are cut down to their best clauses, keeping clauses worth one point less."""

_ANSWER = re.compile(r"\\boxed|final answer|(?<!whether )(?<!if )the answer is|answer\s*[:=]|\*\*answer", re.IGNORECASE)
_DISPLAY = re.compile(r"\s*(\\\[|\$\$)")
_CONCLUSION = re.compile(
    r"\b(therefore|thus|hence|which gives|this gives|gives us|we get|we obtain|yields|results? in|equals|"
    r"conclude|must be|is the (only )?(solution|answer|value|result)|the solutions? (is|are)|confirm(s|ed)?|"
    r"same (result|answer)|so the|simplif(y|ies) to|comes out)\b",
    re.IGNORECASE,
)
_REJECTION = re.compile(
    r"(doesn'?t work|does not work|not work|wrong|mistake|incorrect|contradict|impossible|invalid|"
    r"no (real )?solutions?|not possible|\bfails?\b|discard|extraneous|not valid|can'?t be|cannot be|"
    r"not correct|messed up|doesn'?t satisfy|does not satisfy|dead end|rule(d)? out)",
    re.IGNORECASE,
)
_VERIFICATION = re.compile(r"\b(check|verif|confirm|plug(ging)? (it|this|back|in)|sanity|satisf|double-check)", re.I)
_STRATEGY = re.compile(
    r"\b(approach|method|strategy|let'?s try|try (to|using|another)|substitut|eliminat|factor|complete the "
    r"square|consider|assume|suppose|case \d|idea|plan|instead|induction|contradiction)",
    re.IGNORECASE,
)
_DEFINITION = re.compile(r"\b(let \w+ (be|=|denote)|define|denote|where \w+ (is|=)|call (it|this))", re.I)
_HEDGE = re.compile(r"\b(maybe|perhaps|probably|might|i think|i guess|not sure|seems)\b", re.IGNORECASE)
_FILLER_UNIT = re.compile(
    r"(hmm+|wait|okay|ok|alright|right|yes|so|now|let me (see|think|check|compute|recall)( again)?|"
    r"let'?s see|hold on|interesting|good|great)\W*",
    re.IGNORECASE,
)
_OPENER = re.compile(
    r"^((hmm+|wait|okay|ok|alright|so|well|now|then|but|and|also|actually|oh|ah|hold on|first|next|"
    r"finally|therefore|thus|hence|similarly|alternatively|again|yes|right|in (that|this) case)\b"
    r"(?!\s*[=<>+*/^]|[(\[])[,.!:]?\s*"  # not a variable: "right = 1", "next[i]"
    r"|let me (see|think|check|recall)( (this|that|it))?( again)?[,.:]\s*"
    r"|(let me|let'?s|let us|i'?ll|i will|i need to|i have to|we need to|i can|we can|i should|we should) "
    r"(?!not\b)"
    r"(now |just |first |quickly |also |try to )?"
    r"|i (think|guess|see|realize|notice)( that)?\s*|we (get|have|obtain|find)\s*:?\s*)+",
    re.IGNORECASE,
)
_HEADER = re.compile(r"[*#\s]*(final answer|answer|conclusion|summary)[*#:\s]*", re.IGNORECASE)
_PROSE_WORD = re.compile(r"([a-z]{3,}|if|in|on|at|by|to|we|it|is|as|or|an|no) [a-z(]")
_MATH_WORDS = {"sqrt", "sin", "cos", "tan", "log", "exp", "root", "sum", "lim", "max", "min", "gcd", "lcm", "mod"}
_BULLET = re.compile(r"^[-*•]\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\\(\[$])")


@dataclass(frozen=True)
class _Unit:
    index: int
    raw: str
    text: str
    tokens: int
    score: float
    conclusive: bool


def split_units(block: str) -> list[str]:
    """Lines of the block, then sentences; a display equation spread over lines is one unit, and a unit
    ending in ":" is joined with the one after it."""
    pieces: list[str] = []
    for line in _lines(block):
        start = 0
        for match in _SENTENCE_END.finditer(line):
            head = line[start : match.start()]
            if _math_balanced(head):
                pieces.append(head)
                start = match.end()
        pieces.append(line[start:])
    units: list[str] = []
    for piece in pieces:
        if units and _HEADER.fullmatch(units[-1]):
            units[-1] = f"{units[-1].strip('*# :').capitalize()}: {piece}"
        elif units and units[-1].rstrip().endswith(":"):
            units[-1] = f"{units[-1]} {piece}"
        else:
            units.append(piece)
    return units


def _lines(block: str) -> list[str]:
    """Non-empty stripped lines, with the lines of an open `\\[ ... \\]` or `$$ ... $$` display joined
    (at most `MAX_DISPLAY_LINES`, so a stray delimiter cannot swallow the block)."""
    lines: list[str] = []
    joined = 0
    for line in block.splitlines():
        line = line.strip()
        if not line:
            continue
        if joined:
            lines[-1] = f"{lines[-1]} {line}"
        else:
            lines.append(line)
        display_open = lines[-1].count("\\[") > lines[-1].count("\\]") or lines[-1].count("$$") % 2 == 1
        joined = joined + 1 if display_open and joined < MAX_DISPLAY_LINES else 0
    return lines


def _clauses(text: str) -> list[str]:
    """`text` cut after `,`, `;` and `:` outside brackets (a clause never splits `{1, 2}` or `f(a, b)`)."""
    clauses, depth, start = [], 0, 0
    for index, char in enumerate(text):
        depth += (char in "([{") - (char in ")]}")
        if char in ",;:" and depth <= 0 and text[index + 1 : index + 2] == " ":
            clauses.append(text[start : index + 1])
            start = index + 2
    clauses.append(text[start:])
    return [clause for clause in clauses if clause.strip()]


def _math_balanced(text: str) -> bool:
    """True when no math region is open at the end of `text` (no split inside `\\( ... \\)` or `\\[ ... \\]`)."""
    return (
        text.count("\\(") == text.count("\\)") and text.count("\\[") == text.count("\\]") and text.count("$") % 2 == 0
    )


def _score(raw: str, position: float) -> tuple[float, bool]:
    """How much a unit is worth keeping, and whether it states a conclusion or answer."""
    stripped = raw.strip()
    if _FILLER_UNIT.fullmatch(stripped) or len(stripped) < 4:
        return -5.0, False
    answer = bool(_ANSWER.search(raw))
    conclusion = bool(_CONCLUSION.search(raw))
    equation = has_math(raw) and bool(re.search(r"=|<|>|\\le|\\ge|\\ne|≤|≥|≠", raw))
    score = 4.0 * answer + 2.0 * conclusion + (2.0 if equation else 1.0 * has_math(raw))
    score += 1.5 * bool(equation and _DISPLAY.match(raw))  # a displayed equation is usually a key result
    score += 1.0 * bool(re.search(r"\d", raw))
    rejection = bool(_REJECTION.search(raw))
    score += 1.5 * rejection + 1.0 * bool(_VERIFICATION.search(raw))
    score += 1.0 * bool(_STRATEGY.search(raw)) + 1.0 * bool(_DEFINITION.search(raw))
    if stripped.endswith("?") and not rejection:
        score -= 2.0
    if _HEDGE.search(raw) and not equation:
        score -= 1.0
    return score + 0.75 * position, answer or conclusion


def clean_unit(raw: str) -> str:
    """A unit as memento text: ASCII math, no filler openers, ending in a full stop."""
    boxed = "\\boxed" in raw and "answer" not in raw.lower()
    text = to_ascii_math(raw.replace("**", ""))
    text = _OPENER.sub("", _BULLET.sub("", text)).strip().rstrip(" ,;:")
    if not text:
        return ""
    if boxed:
        text = f"Final answer: {text}"
    if text[-1] not in ".!?":
        text += "."
    word = _PROSE_WORD.match(text)
    if word and word.group(1) not in _MATH_WORDS:
        text = text[0].upper() + text[1:]
    return text


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9=+\-*/^<>]", "", text.lower())


def _budget(block_tokens: int) -> tuple[int, int]:
    """(target, hard cap) memento tokens for a block of `block_tokens` tokens."""
    cap = max(int(block_tokens * MAX_RATIO), min(MIN_TOKENS, block_tokens))
    return min(max(round(block_tokens * TARGET_RATIO), MIN_TOKENS), cap), cap


def _truncate(text: str, tokens: int, limit: int) -> str:
    """Cut a too-long text at a word boundary near `limit` tokens (proportionally by characters)."""
    if tokens <= limit:
        return text
    cut = text[: max(int(len(text) * limit / tokens) - 4, 1)]
    cut = cut[: cut.rfind(" ")] if " " in cut else cut
    return cut.rstrip(" ,;:") + " ..."


def _condense(unit: _Unit, room: int, tokenizer: str) -> _Unit | None:
    """The most informative clauses of a unit too long for the `room` left, or None if none fits."""
    if room < MIN_CLAUSE_TOKENS or unit.score < MIN_CONDENSE_SCORE:
        return None
    clauses = _clauses(unit.text)
    if len(clauses) < 2:
        return None
    sizes = count_tokens(clauses, tokenizer)
    ranked = sorted(range(len(clauses)), key=lambda i: -_score(clauses[i], i / (len(clauses) - 1))[0])
    kept, spent = [], 0
    for index in ranked:
        if spent + sizes[index] <= room and _score(clauses[index], 0.0)[0] >= MIN_CONDENSE_SCORE - 1:
            kept.append(index)
            spent += sizes[index]
    if not kept:
        return None
    text = clean_unit(" ".join(clauses[i].strip() for i in sorted(kept)))
    return _Unit(unit.index, unit.raw, text, spent, unit.score, unit.conclusive)


def extractive_memento(block: str, tokenizer: str = DEFAULT_ENCODING) -> str:
    """A memento for one block, from its own most informative statements (deterministic)."""
    raws = split_units(block)
    if not raws:
        raise ValueError("cannot write a memento for an empty block")
    cleaned = [clean_unit(raw) for raw in raws]
    sizes = count_tokens([*cleaned, block], tokenizer)
    block_tokens = sizes.pop()
    target, cap = _budget(block_tokens)
    units = []
    for index, (raw, text, tokens) in enumerate(zip(raws, cleaned, sizes, strict=True)):
        if not text or find_reserved(text):
            continue
        score, conclusive = _score(raw, index / max(len(raws) - 1, 1))
        score -= max(0, tokens - 60) / 40  # long units spend the budget of several dense ones
        units.append(_Unit(index, raw, text, tokens, score, conclusive))
    chosen: list[_Unit] = []
    spent = 0
    keys: list[str] = []
    for unit in sorted(units, key=lambda u: (-u.score, -u.index)):
        if unit.score < MIN_SCORE and chosen:
            break
        key = _key(unit.text)
        if any(key in other or other in key for other in keys):
            continue
        room = (target if chosen else cap) - spent
        if unit.tokens > room:
            unit = _condense(unit, room, tokenizer)
            if unit is None:
                continue
        chosen.append(unit)
        keys.append(key)
        spent += unit.tokens
        if spent >= target:
            break
    if not chosen:
        best = max(units, key=lambda u: (u.score, u.index)) if units else None
        text = best.text if best else clean_unit(block) or block.strip()
        return _truncate(text, best.tokens if best else block_tokens, cap)
    lead = max((u for u in chosen if u.conclusive), key=lambda u: (u.score, u.index), default=None)
    ordered = sorted(chosen, key=lambda u: (u is not lead, u.index))
    return " ".join(unit.text for unit in ordered)


def annotate_extractive(trace: SegmentedTrace) -> AnnotatedTrace:
    """Every block of a trace with its extractive memento (no judge, no cost)."""
    mementos = [extractive_memento(block, trace.tokenizer) for block in trace.block_texts()]
    return AnnotatedTrace(
        **trace.model_dump(),
        mementos=mementos,
        memento_tokens=count_tokens(mementos, trace.tokenizer),
        reviews=[],
        annotator_model=EXTRACTIVE_MODEL,
        prompt_version=EXTRACTIVE_VERSION,
        usage=Usage(),
    )
