"""The memento text format: how blocks, mementos and the final answer are laid out in `response`.

Canonical layout (what `render_response` writes)::

    <think>\\n
    <|block_start|>BLOCK 1<|block_end|>\\n<|summary_start|>MEMENTO 1<|summary_end|>\\n
    ...
    </think>\\n
    ANSWER

Block and memento texts sit between their delimiters byte for byte (leading or trailing whitespace
included), so the blocks of a trace concatenate back to its reasoning exactly. Between the delimited
regions only whitespace is allowed: the parser accepts any whitespace there (other tools put spaces or
blank lines around delimiters) and the canonical layout uses a single newline. After `</think>` the
canonical layout writes one newline, which the parser removes again, so the answer round-trips exactly.

Source texts that already contain a delimiter string would make `response` ambiguous. We do not
escape: such traces are rejected upstream (`contains_delimiter`) and `render_response` refuses them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BLOCK_START = "<|block_start|>"
BLOCK_END = "<|block_end|>"
SUMMARY_START = "<|summary_start|>"
SUMMARY_END = "<|summary_end|>"
DELIMITERS: tuple[str, ...] = (BLOCK_START, BLOCK_END, SUMMARY_START, SUMMARY_END)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

_DELIMITER_RE = re.compile("|".join(re.escape(d) for d in DELIMITERS))
_STRUCTURE_TOKENS_RE = re.compile("|".join(re.escape(t) for t in (*DELIMITERS, THINK_OPEN, THINK_CLOSE)))
# Which delimiter may follow which: block -> summary -> block ...
_NEXT = {
    BLOCK_START: BLOCK_END,
    BLOCK_END: SUMMARY_START,
    SUMMARY_START: SUMMARY_END,
    SUMMARY_END: BLOCK_START,
}


class FormatError(ValueError):
    """A malformed memento response; `position` is the character offset of the problem."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(f"{message} (at character {position})")
        self.position = position


class UnbalancedDelimiterError(FormatError):
    """A delimiter opens without closing, or closes without opening."""


class OutOfOrderDelimiterError(FormatError):
    """Delimiters appear in an order other than block, block end, summary, summary end."""


class MissingMementoError(FormatError):
    """A block is not followed by its memento."""


class TextOutsideBlocksError(FormatError):
    """Non-whitespace text between delimited regions, or a missing think section."""


class DelimiterInTextError(ValueError):
    """A block, memento or answer handed to `render_response` contains a delimiter string."""


@dataclass(frozen=True)
class MementoResponse:
    blocks: list[str]
    mementos: list[str]
    answer: str


def find_delimiter(text: str) -> str | None:
    """Return the first delimiter string found in `text`, or None."""
    match = _DELIMITER_RE.search(text)
    return match.group(0) if match else None


def find_reserved(text: str) -> str | None:
    """Return the first string that may not appear inside a block or memento (delimiters, think tags)."""
    match = _STRUCTURE_TOKENS_RE.search(text)
    return match.group(0) if match else None


def render_response(blocks: list[str], mementos: list[str], answer: str) -> str:
    """Lay out blocks, their mementos and the final answer in the canonical memento format."""
    if len(blocks) != len(mementos):
        raise ValueError(f"{len(blocks)} blocks but {len(mementos)} mementos")
    if not blocks:
        raise ValueError("a memento response needs at least one block")
    for kind, texts in (("block", blocks), ("memento", mementos)):
        for index, text in enumerate(texts):
            if found := find_reserved(text):
                raise DelimiterInTextError(f"{kind} {index} contains the reserved string {found!r}")
    if found := find_delimiter(answer):
        raise DelimiterInTextError(f"the answer contains the reserved string {found!r}")
    parts = [THINK_OPEN, "\n"]
    for block, memento in zip(blocks, mementos, strict=True):
        parts += [BLOCK_START, block, BLOCK_END, "\n", SUMMARY_START, memento, SUMMARY_END, "\n"]
    parts += [THINK_CLOSE, "\n", answer]
    return "".join(parts)


def parse_response(text: str) -> MementoResponse:
    """Parse a memento response, canonical or with other whitespace around the delimiters.

    Raises a `FormatError` subclass naming the first problem and its position; never returns a
    partial parse.
    """
    open_at = text.find(THINK_OPEN)
    if open_at < 0:
        raise TextOutsideBlocksError("no <think> opening the response", 0)
    _require_blank(text, 0, open_at, "before <think>")
    blocks: list[str] = []
    mementos: list[str] = []
    expected = BLOCK_START
    cursor = open_at + len(THINK_OPEN)
    for match in _STRUCTURE_TOKENS_RE.finditer(text, cursor):
        token, start = match.group(0), match.start()
        if token == THINK_CLOSE:
            if expected in (BLOCK_END, SUMMARY_END):
                raise UnbalancedDelimiterError(f"</think> while {_opener(expected)} is still open", start)
            if expected == SUMMARY_START:
                raise MissingMementoError(f"block {len(blocks) - 1} has no memento", start)
            if not blocks:
                raise MissingMementoError("the think section holds no block", start)
            _require_blank(text, cursor, start, "between the last memento and </think>")
            answer = text[match.end() :]
            return MementoResponse(blocks, mementos, answer.removeprefix("\n"))
        if token == THINK_OPEN:
            raise OutOfOrderDelimiterError("a second <think> inside the think section", start)
        if token != expected:
            raise _order_error(token, expected, start, len(blocks))
        if token in (BLOCK_START, SUMMARY_START):
            _require_blank(text, cursor, start, f"before {token}")
        else:
            (blocks if token == BLOCK_END else mementos).append(text[cursor:start])
        expected = _NEXT[token]
        cursor = match.end()
    if expected in (BLOCK_END, SUMMARY_END):
        raise UnbalancedDelimiterError(f"{_opener(expected)} is never closed", len(text))
    raise UnbalancedDelimiterError("<think> is never closed by </think>", len(text))


def _opener(closer: str) -> str:
    return BLOCK_START if closer == BLOCK_END else SUMMARY_START


def _order_error(token: str, expected: str, position: int, n_blocks: int) -> FormatError:
    if expected == SUMMARY_START and token == BLOCK_START:
        return MissingMementoError(f"block {n_blocks - 1} has no memento before the next block", position)
    if token in (BLOCK_END, SUMMARY_END) and expected in (BLOCK_START, SUMMARY_START):
        return UnbalancedDelimiterError(f"{token} without a matching {_opener(token)}", position)
    if expected in (BLOCK_END, SUMMARY_END):
        return UnbalancedDelimiterError(f"{token} inside an open {_opener(expected)} region", position)
    return OutOfOrderDelimiterError(f"expected {expected} but found {token}", position)


def _require_blank(text: str, start: int, end: int, where: str) -> None:
    stray = text[start:end]
    if stray.strip():
        offset = start + len(stray) - len(stray.lstrip())
        raise TextOutsideBlocksError(f"text outside blocks {where}: {stray.strip()[:40]!r}", offset)
