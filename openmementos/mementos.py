"""What makes a memento publishable: the one home of the memento rules.

`annotate` applies them to every memento an LLM writes (a memento that breaks one is asked for again,
like a missing one) and `validate` applies them again before publishing, with the same bounds, so what
annotate writes passes validate. Pure functions, no I/O.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

from openmementos.format import find_reserved

MEMENTO_RULES: dict[str, str] = {
    "memento_empty": "no memento is empty or whitespace",
    "memento_reserved": "no memento holds a delimiter string or a think tag",
    "memento_placeholder": "no memento is placeholder text (N/A, TODO, '[summary unavailable]', ...)",
    "memento_ascii": "mementos are plain ASCII (checked with --require-ascii)",
    "memento_ratio": "memento tokens / block tokens is within [--min-ratio, --max-ratio] for every block",
}
"""Rule code -> what it requires. Codes are stable: they appear in quarantine files and reports."""


class MementoRules(BaseModel):
    """The configurable bounds of the memento rules."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_ratio: float = Field(0.02, ge=0, description="Smallest allowed memento/block token ratio.")
    max_ratio: float = Field(1.0, gt=0, description="Largest allowed memento/block token ratio.")
    require_ascii: bool = Field(False, description="Mementos must be plain ASCII (the recipe's plain-ASCII math).")

    @model_validator(mode="after")
    def _check_bounds(self) -> MementoRules:
        if self.min_ratio > self.max_ratio:
            raise ValueError(f"min_ratio {self.min_ratio} is above max_ratio {self.max_ratio}")
        return self


DEFAULT_RULES = MementoRules()

_PLACEHOLDER_WHOLE = re.compile(
    r"(n/?a|none|null|nil|todo|tbd|tba|empty|placeholder|\.+|…|-+|_+|\?+"
    r"|(memento|summary)( \d+)?|no (memento|summary)( available| provided)?"
    r"|(memento|summary) (not available|unavailable|missing|omitted|pending))"
)
_PLACEHOLDER_ANYWHERE = re.compile(
    r"placeholder|lorem ipsum|(memento|summary) (is )?(not available|unavailable|missing|omitted)"
    r"|no (memento|summary) (available|provided)|insert (memento|summary)"
)


def is_placeholder(text: str) -> bool:
    """True for stand-in text that is not a memento ("N/A", "[summary unavailable]", "...", "TODO"), and for
    text with no letter or digit at all (a weak model's `"...},"`)."""
    if not any(char.isalnum() for char in text):
        return True
    core = re.sub(r"[\s\[\]()<>{}\"'`*#:.]+", " ", text.lower()).strip()
    bare = text.strip().lower()
    return bool(_PLACEHOLDER_WHOLE.fullmatch(core) or _PLACEHOLDER_WHOLE.fullmatch(bare)) or bool(
        _PLACEHOLDER_ANYWHERE.search(text.lower())
    )


def memento_problems(
    text: str, memento_tokens: int | None, block_tokens: int | None, rules: MementoRules = DEFAULT_RULES
) -> list[tuple[str, str]]:
    """Every rule a memento breaks, as (rule code, what is wrong); empty when it is publishable.

    The messages read after "memento N": "is empty", "has 3 tokens for a 900-token block (...)". The
    ratio rule needs both token counts (None: not checked).
    """
    if not text.strip():
        return [("memento_empty", "is empty")]
    problems = []
    if reserved := find_reserved(text):
        problems.append(("memento_reserved", f"contains {reserved!r}"))
    if is_placeholder(text):
        problems.append(("memento_placeholder", f"is placeholder text {text.strip()[:40]!r}"))
    if rules.require_ascii and not text.isascii():
        char = next(c for c in text if not c.isascii())
        problems.append(("memento_ascii", f"has {char!r} (U+{ord(char):04X}), not plain ASCII"))
    if memento_tokens is None or block_tokens is None:
        return problems
    ratio = memento_tokens / block_tokens if block_tokens else float("inf")
    if not rules.min_ratio <= ratio <= rules.max_ratio:
        problems.append(
            (
                "memento_ratio",
                f"has {memento_tokens} tokens for a {block_tokens}-token block "
                f"(ratio {ratio:.3f}, allowed {rules.min_ratio:g}-{rules.max_ratio:g})",
            )
        )
    return problems
