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
# Plain JSON Schema objects; the engine wraps them into `response_format`.

MEMENTOS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "mementos": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"id": {"type": "integer"}, "memento": {"type": "string"}},
                "required": ["id", "memento"],
                "additionalProperties": False,
            },
        }
    },
    "required": ["mementos"],
    "additionalProperties": False,
}

RUBRIC: dict[str, int] = {
    "formulas": 3,
    "values": 2,
    "method": 2,
    "verification": 1,
    "confirmed": 1,
    "result_first": 1,
}
"""Judge criteria and their maximum points (SPEC 4.6); they add up to 10."""

VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        **{name: {"type": "number"} for name in RUBRIC},
        "deduction": {"type": "number"},
        "fixes": {"type": "array", "items": {"type": "string"}},
    },
    "required": [*RUBRIC, "deduction", "fixes"],
    "additionalProperties": False,
}

REFINED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"memento": {"type": "string"}},
    "required": ["memento"],
    "additionalProperties": False,
}


# --------------------------------------------------------------------------- finding JSON in an answer


def _json_or_none(text: str) -> Any:
    try:
        return extract_json(text)
    except MalformedAnswer:
        return None


def _salvage_items(text: str) -> list[Any]:
    """Complete items of a JSON list cut short (a generation that hit its token limit)."""
    decoder = json.JSONDecoder()
    start = text.find("[", max(text.find('"mementos"'), 0))
    items: list[Any] = []
    if start < 0:
        return items
    position = start + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
        try:
            item, position = decoder.raw_decode(text, position)
        except ValueError:
            return items
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


def _listed_items(value: Any) -> list[Any] | None:
    """The items of a memento list answer, or None when `value` is not one (e.g. a single item)."""
    if isinstance(value, list):
        return value
    if not isinstance(value, dict):
        return None
    for key in ("mementos", "summaries", "items"):
        if isinstance(value.get(key), list):
            return value[key]
    if value and all(str(k).strip().isdigit() for k in value):  # {"1": "...", "2": "..."}
        return [{"id": int(k), "memento": v} for k, v in value.items()]
    return None


def _answer_items(text: str) -> list[Any]:
    items = _listed_items(_json_or_none(text))
    # Not a whole list: a list cut short (token limit) still holds its complete items.
    return items if items is not None else _salvage_items(text)


def parse_mementos(text: str, ids: Sequence[int]) -> MementoAnswer:
    """Read the mementos for `ids` (1-based block numbers) from a compressor answer.

    Accepts `{"mementos": [{"id", "memento"}]}` (the requested shape), a bare list, positional strings,
    an id-keyed object, JSON in fences or prose, and lists truncated mid-way. Never invents or shifts a
    memento: an id the answer does not clearly cover is reported as a problem.
    """
    by_id = _items_by_id(_answer_items(text), ids)
    usable: dict[int, str] = {}
    problems: dict[int, str] = {}
    for key in ids:
        if key not in by_id:
            problems[key] = "missing"
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


_SCORE_TEXT = re.compile(r"score\W{0,3}(\d+(?:\.\d+)?)\s*(?:/\s*10)?", re.IGNORECASE)


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
    if isinstance(value, str):
        value = [line.strip(" -*\t") for line in value.splitlines()]
    if not isinstance(value, list):
        return []
    return [str(fix).strip() for fix in value if str(fix).strip()]


def parse_verdict(text: str) -> Verdict:
    """A judge's score (0-10) and fixes.

    The score is the sum of the rubric points (each clamped to its range) minus the deduction, clamped
    to 0-10, so an arithmetic slip of the judge cannot push a memento over the threshold. An answer
    with only a `score` (or "Score: 7/10" in prose) is accepted as given.
    """
    value = _json_or_none(text)
    if isinstance(value, dict):
        fixes = _fixes(value.get("fixes", value.get("feedback")))
        parts = {name: _number(value.get(name)) for name in RUBRIC}
        if all(points is not None for points in parts.values()):
            total = sum(min(max(parts[name] or 0.0, 0.0), top) for name, top in RUBRIC.items())
            deduction = min(max(_number(value.get("deduction")) or 0.0, 0.0), 10.0)
            return Verdict(round(min(max(total - deduction, 0.0), 10.0), 2), fixes)
        score = _number(value.get("score"))
        if score is not None:
            return Verdict(min(max(score, 0.0), 10.0), fixes)
    match = _SCORE_TEXT.search(text)
    if match:
        lines = [line.strip(" -*\t") for line in text.splitlines() if line.strip().startswith(("-", "*"))]
        return Verdict(min(float(match.group(1)), 10.0), [line for line in lines if line])
    raise MalformedAnswer("the judge's answer has no score")


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
