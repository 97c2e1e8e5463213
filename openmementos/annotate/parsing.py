"""Reading LLM answers: memento lists, judge verdicts and refined mementos, tolerantly.

Servers that honour `response_format` return clean JSON; others wrap it in prose or code fences, and a
generation cut at its token limit ends mid-list. The parsers here take whatever can be trusted from an
answer and say precisely what could not be used, so the recipe can re-ask for exactly that.

Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from openmementos.llm import MalformedAnswer, extract_json

# --------------------------------------------------------------------------- JSON schemas (structured output)
# Plain JSON Schema objects; the engine sends them as the server takes them (`llm.request`). They are as
# tight as a grammar can enforce: a weak model under a grammar cannot run a list past its blocks, write
# a one-character memento or loop on fixes until its token limit.

MEMENTO_MIN_CHARS = 8
"""Shortest memento text the schema allows (a memento states a result; "1" is not one)."""
MAX_FIXES = 5
FIX_MAX_CHARS = 300

RUBRIC: dict[str, int] = {
    "formulas": 3,
    "values": 2,
    "method": 2,
    "verification": 1,
    "confirmed": 1,
    "result_first": 1,
}
"""Judge criteria and their maximum points (SPEC 4.6); they add up to 10."""
MAX_DEDUCTION = 10


def _object(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def mementos_schema(ids: Sequence[int]) -> dict[str, Any]:
    """One memento for each of `ids` (block numbers), no more, none shorter than MEMENTO_MIN_CHARS."""
    item = {
        "type": "object",
        "properties": {
            "id": {"type": "integer", "enum": sorted(ids)},
            "memento": {"type": "string", "minLength": MEMENTO_MIN_CHARS},
        },
        "required": ["id", "memento"],
        "additionalProperties": False,
    }
    listed = {"type": "array", "items": item, "minItems": len(ids), "maxItems": len(ids)}
    return _object({"mementos": listed})


def verdict_properties(min_fixes: int = 1, max_fixes: int = MAX_FIXES) -> dict[str, Any]:
    """The fields of one verdict: each rubric criterion and the deduction in range, at most 5 short fixes."""
    points = {name: {"type": "integer", "minimum": 0, "maximum": top} for name, top in RUBRIC.items()}
    return {
        **points,
        "deduction": {"type": "integer", "minimum": 0, "maximum": MAX_DEDUCTION},
        "fixes": {
            "type": "array",
            "items": {"type": "string", "minLength": 1, "maxLength": FIX_MAX_CHARS},
            "minItems": min_fixes,
            "maxItems": max_fixes,
        },
    }


VERDICT_SCHEMA: dict[str, Any] = _object(verdict_properties())


def verdicts_schema(ids: Sequence[int], fixes: bool = True) -> dict[str, Any]:
    """One verdict for each of `ids` (block numbers), keyed by `id`: the per-trace judge's answer.

    Compact, since answer tokens cost the most: the rubric points as one list in `RUBRIC` order (each
    clamped to its range when read). Fixes are optional (only a memento below the threshold needs
    them), and none at all when `fixes` is False (the last round: no refinement follows)."""
    properties = verdict_properties(min_fixes=0, max_fixes=MAX_FIXES if fixes else 0)
    points = {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": max(RUBRIC.values())}}
    compact = {
        "id": {"type": "integer", "enum": sorted(ids)},
        "points": {**points, "minItems": len(RUBRIC), "maxItems": len(RUBRIC)},
        "deduction": properties["deduction"],
        "fixes": properties["fixes"],
    }
    item = _object(compact)
    return _object({"verdicts": {"type": "array", "items": item, "minItems": len(ids), "maxItems": len(ids)}})


REFINED_SCHEMA: dict[str, Any] = _object({"memento": {"type": "string", "minLength": MEMENTO_MIN_CHARS}})


# --------------------------------------------------------------------------- finding JSON in an answer


def _json_or_none(text: str) -> Any:
    try:
        return extract_json(text)
    except MalformedAnswer:
        return None


def _salvage_items(text: str, key: str = "mementos") -> list[Any]:
    """Complete items of the JSON list under `key` cut short (a generation that hit its token limit)."""
    return _salvage(text, key)[0]


def _salvage(text: str, key: str) -> tuple[list[Any], str]:
    """The complete items of the JSON list under `key`, and the text after the last of them."""
    decoder = json.JSONDecoder(strict=False)  # weak models write raw newlines inside strings
    start = text.find("[", max(text.find(f'"{key}"'), 0))
    items: list[Any] = []
    if start < 0:
        return items, ""
    position = start + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        try:
            item, position = decoder.raw_decode(text, position)
        except ValueError:
            return items, text[position:]
        items.append(item)


# --------------------------------------------------------------------------- memento lists


@dataclass(frozen=True)
class MementoAnswer:
    """What one compressor answer gave for the ids it was asked about."""

    usable: dict[int, str]
    """The memento texts found, stripped (the memento rules are applied by the caller)."""
    problems: dict[int, str]
    """Every asked id the answer gives no memento text for, with the reason."""


_ITEM_TEXT_KEYS = ("memento", "summary", "text", "content")


def _items_by_id(items: Sequence[Any], ids: Sequence[int]) -> dict[int, Any]:
    """Map answer items to the asked ids: by their `id` field, or by position when none has one."""
    with_ids = [item for item in items if isinstance(item, dict) and "id" in item]
    if not with_ids:
        # Positional answers can be aligned only when the count is right: a gap would shift every memento.
        return dict(zip(ids, items, strict=True)) if len(items) == len(ids) else {}
    mapped: dict[int, Any] = {}
    for item in with_ids:
        try:
            key = int(str(item["id"]).strip().lstrip("#"))
        except ValueError:
            continue
        mapped.setdefault(key, item)
    return mapped


def _item_text(item: Any) -> Any:
    if isinstance(item, dict):
        return next((item[key] for key in _ITEM_TEXT_KEYS if key in item), None)
    return item


_LIST_KEYS = {"mementos": ("mementos", "summaries", "items"), "verdicts": ("verdicts", "grades", "items")}


def _listed_items(value: Any, key: str = "mementos") -> list[Any] | None:
    """The items of a list answer under `key` ("mementos" or "verdicts"), or None when `value` is not
    one (e.g. a single item)."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict):
        return None
    for name in _LIST_KEYS[key]:
        if isinstance(value.get(name), list):
            return value[name]
    if value and all(str(k).strip().isdigit() for k in value):  # {"1": "...", "2": "..."}
        return [{"id": int(k), "memento": v} if key == "mementos" else {**v, "id": int(k)} for k, v in value.items()]
    return None


def _answer_items(text: str, key: str = "mementos") -> list[Any]:
    items = _listed_items(_json_or_none(text), key)
    # Not a whole list: a list cut short (token limit) still holds its complete items.
    return items if items is not None else _salvage_items(text, key)


def parse_mementos(text: str, ids: Sequence[int]) -> MementoAnswer:
    """Read the mementos for `ids` (1-based block numbers) from a compressor answer.

    Accepts `{"mementos": [{"id", "memento"}]}` (the requested shape), a bare list, positional strings,
    an id-keyed object, JSON in fences or prose, and lists truncated mid-way. Never invents or shifts a
    memento: an id the answer does not clearly cover is reported as a problem.
    """
    items = _answer_items(text)
    by_id = _items_by_id(items, ids)
    usable: dict[int, str] = {}
    problems: dict[int, str] = {}
    for key in ids:
        if key not in by_id:
            problems[key] = "missing" if items else "missing: no memento list could be read from the answer"
            continue
        memento = _item_text(by_id[key])
        if isinstance(memento, str):
            usable[key] = memento.strip()
        else:
            problems[key] = f"not text ({type(memento).__name__})"
    return MementoAnswer(usable, problems)


# --------------------------------------------------------------------------- judge verdicts


@dataclass(frozen=True)
class Verdict:
    score: float
    fixes: list[str]

    @property
    def feedback(self) -> str:
        return "\n".join(f"- {fix}" for fix in self.fixes)


_SCORE_TEXT = re.compile(r"score\W{0,3}(-?\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.IGNORECASE)
_FIELD_NUMBER = r'"{name}"\s*:\s*"?(-?\d+(?:\.\d+)?)'


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        match = re.match(r"\s*(-?\d+(?:\.\d+)?)", value)
        return float(match.group(1)) if match else None
    return None


def _fixes(value: Any) -> list[str]:
    """At most MAX_FIXES distinct fixes, each cut to FIX_MAX_CHARS (a looping answer repeats itself)."""
    if isinstance(value, str):
        value = [line.strip(" -*\t") for line in value.splitlines()]
    if not isinstance(value, list):
        return []
    fixes: list[str] = []
    for fix in value:
        text = str(fix).strip()[:FIX_MAX_CHARS]
        if text and text not in fixes:
            fixes.append(text)
        if len(fixes) == MAX_FIXES:
            break
    return fixes


def _clamped(value: float, top: float) -> float:
    return min(max(value, 0.0), top)


def rubric_score(parts: dict[str, float], deduction: float) -> float:
    """The 0-10 score of rubric points and a deduction, each clamped to its range first."""
    total = sum(_clamped(parts[name], top) for name, top in RUBRIC.items())
    return round(_clamped(total - _clamped(deduction, MAX_DEDUCTION), 10.0), 2)


def verdict_of(value: dict[str, Any]) -> Verdict | str:
    """The verdict in one parsed JSON object, or what is missing from it."""
    fixes = _fixes(value.get("fixes", value.get("feedback")))
    parts = {name: _number(value.get(name)) for name in RUBRIC}
    if all(points is not None for points in parts.values()):
        return Verdict(rubric_score(parts, _number(value.get("deduction")) or 0.0), fixes)  # type: ignore[arg-type]
    score = _number(value.get("score"))
    if score is not None:
        return _bare_score(score, fixes)
    missing = [name for name, points in parts.items() if points is None]
    return f"its rubric lacks {', '.join(missing)}"


def _bare_score(score: float, fixes: list[str]) -> Verdict:
    if not 0 <= score <= 10:
        raise MalformedAnswer(f"the judge's score {score:g} is out of range (0-10)")
    return Verdict(score, fixes)


def _salvaged_verdict(text: str) -> Verdict | None:
    """A verdict from an answer cut short (token limit, looping fixes) that holds every rubric number."""
    found = {}
    for name in (*RUBRIC, "deduction"):
        match = re.search(_FIELD_NUMBER.format(name=name), text)
        if match:
            found[name] = float(match.group(1))
    if not all(name in found for name in RUBRIC):
        return None
    parts = {name: found[name] for name in RUBRIC}
    fixes = [fix for fix in _salvage_items(text, "fixes") if isinstance(fix, str)]
    return Verdict(rubric_score(parts, found.get("deduction", 0.0)), _fixes(fixes))


def parse_verdict(text: str, cut_at_limit: bool = False) -> Verdict:
    """A judge's score (0-10) and fixes.

    The score is the sum of the rubric points (each clamped to its range) minus the deduction (clamped
    to 0-10), clamped to 0-10, so neither an arithmetic slip nor an out-of-range value of the judge can
    push a memento over the threshold. An answer cut short (`cut_at_limit`: its token limit, e.g. fixes
    repeated until it ran out) is used when every rubric number is in it. An answer with only a `score`
    (or "Score: 7/10" in prose) is accepted as given when it is within 0-10. The MalformedAnswer says
    what was wrong: cut at the token limit, a score out of range, the rubric fields missing.
    """
    value = _json_or_none(text)
    problem = "it has no JSON rubric and no 'score: N'"
    if isinstance(value, dict):
        verdict = verdict_of(value)
        if isinstance(verdict, Verdict):
            return verdict
        problem = verdict
    elif (salvaged := _salvaged_verdict(text)) is not None:
        return salvaged
    elif match := _SCORE_TEXT.search(text):
        lines = [line.strip(" -*\t") for line in text.splitlines() if line.strip().startswith(("-", "*"))]
        return _bare_score(float(match.group(1)), _fixes(lines))
    if cut_at_limit:
        raise MalformedAnswer(f"the judge's answer was cut at the token limit before its rubric was whole ({problem})")
    raise MalformedAnswer(f"the judge's answer has no usable score: {problem}")


def _salvaged_tail(text: str) -> Verdict | None:
    """The verdict being written when a per-trace answer was cut, once its deduction is in (its fixes
    may be lost): a verdict cut before its deduction is not taken at full marks."""
    deduction = re.search(_FIELD_NUMBER.format(name="deduction"), text)
    if deduction is None:
        return None
    listed = re.search(r'"points"\s*:\s*\[([^\]]*)\]', text)
    if listed is None:
        return _salvaged_verdict(text)
    points = [_number(value) for value in listed.group(1).split(",")]
    if len(points) != len(RUBRIC) or any(value is None for value in points):
        return None
    fixes = [fix for fix in _salvage_items(text, "fixes") if isinstance(fix, str)]
    parts = dict(zip(RUBRIC, points, strict=True))
    return Verdict(rubric_score(parts, float(deduction.group(1))), _fixes(fixes))  # type: ignore[arg-type]


@dataclass(frozen=True)
class VerdictAnswer:
    """What one per-trace judge answer gave for the mementos (by block number) it was asked about."""

    verdicts: dict[int, Verdict]
    problems: dict[int, str]
    """Every asked id without a usable verdict, with the reason."""


def parse_verdicts(text: str, ids: Sequence[int], cut_at_limit: bool = False) -> VerdictAnswer:
    """The verdicts of a per-trace judge answer (`{"verdicts": [{"id", "points", "deduction", "fixes"}]}`,
    or the rubric criteria by name), by block.

    Each verdict is read like a single one (`verdict_of`: rubric points clamped, a bare in-range
    `score` accepted); a list cut short keeps its complete verdicts. An id the answer does not clearly
    cover, or covers without a readable rubric, is reported as a problem, never guessed.
    """
    value = _listed_items(_json_or_none(text), "verdicts")
    whole = value is not None and any(isinstance(item, dict) for item in value)  # not a points list found inside
    items, rest = (value, "") if whole else _salvage(text, "verdicts")
    by_id = _items_by_id([item for item in items if isinstance(item, dict)], ids)
    last = re.match(r'\s*\{\s*"id"\s*:\s*"?(\d+)', rest)
    if last and int(last.group(1)) not in by_id and (salvaged := _salvaged_tail(rest)) is not None:
        by_id[int(last.group(1))] = salvaged
    cut = " (the answer was cut at its token limit)" if cut_at_limit else ""
    verdicts: dict[int, Verdict] = {}
    problems: dict[int, str] = {}
    for key in ids:
        item = by_id.get(key)
        if isinstance(item, Verdict):
            verdicts[key] = item
            continue
        if not isinstance(item, dict):
            problems[key] = "no verdict" + cut
            continue
        points = item.get("points")
        if isinstance(points, list) and len(points) == len(RUBRIC):  # the compact form: points in RUBRIC order
            item = {**dict(zip(RUBRIC, points, strict=True)), **item}
        try:
            verdict = verdict_of(item)
        except MalformedAnswer as exc:
            verdict = str(exc)
        if isinstance(verdict, Verdict):
            verdicts[key] = verdict
        else:
            problems[key] = verdict + cut
    return VerdictAnswer(verdicts, problems)


# --------------------------------------------------------------------------- refined mementos


def parse_refined(text: str) -> str:
    """The memento of a refinement answer (`{"memento": ...}`, or the bare text when it is not JSON)."""
    value = _json_or_none(text)
    if isinstance(value, dict):
        memento = _item_text(value)
    else:
        memento = None if text.lstrip().startswith(("{", "[")) else text.strip()
    if not isinstance(memento, str):
        raise MalformedAnswer(f"the refined memento is not text ({type(memento).__name__})")
    return memento.strip()
