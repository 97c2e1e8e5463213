"""Tolerant reading of JSON answers: models wrap JSON in prose or code fences, servers may ignore
``response_format``; callers still want the object."""

from __future__ import annotations

import json
import re
from typing import Any

from openmementos.llm.errors import MalformedAnswer

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.DOTALL)
_EXCERPT_CHARS = 80


def extract_json(text: str) -> Any:
    """The JSON value in an answer: the whole text, else a fenced block, else the first ``{...}`` or
    ``[...]`` that parses. Raises :class:`MalformedAnswer` when there is none."""
    stripped = text.strip()
    decoder = json.JSONDecoder(strict=False)  # weak models write raw newlines inside strings
    candidates = [stripped, *(block.strip() for block in _FENCE.findall(text))]
    for candidate in candidates:
        try:
            return decoder.decode(candidate)
        except ValueError:
            pass
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except ValueError:
            continue
        return value
    excerpt = " ".join(stripped.split())[:_EXCERPT_CHARS]
    raise MalformedAnswer(f"no JSON value in the answer (starts: {excerpt!r})")
