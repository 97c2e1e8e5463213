"""Which input columns hold a trace, and how a row of any supported shape becomes a `SourceTrace`.

Three row shapes are understood; `ColumnMapping.resolve` picks one from the first file's columns unless
the user names the columns:

- messages: a list of turns, OpenThoughts3's `{from: human|gpt, value}` or chat-style
  `{role: user|assistant|system, content}` (system turns are ignored). Default column `conversations`,
  then `messages`.
- columns: separate problem / reasoning / answer columns. A reasoning that contains `<think>` is taken
  as the full assistant text (the answer column, if any, is appended after a newline); otherwise it is
  wrapped in `<think>...</think>` and the answer follows.
- source trace: the output of `openmementos download` itself (every `SourceTrace` field), read back
  losslessly, e.g. to draw a stratified selection from traces that already passed the filters.

Every shape is turned into an OpenThoughts3 row and converted by `SourceTrace.from_openthoughts`, so the
structural checks (one closed think section, string fields, integer difficulty, no reserved delimiter)
are the same for every corpus. Domain, source and difficulty come from columns or constants (`fixed`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from openmementos.download.sampling import Stratum, stratum_value
from openmementos.format import THINK_CLOSE, THINK_OPEN
from openmementos.schema import SourceTrace, TraceRejected

METADATA = ("domain", "source", "difficulty")
_ROLES = {"user": "human", "assistant": "gpt"}
_SOURCE_TRACE_FIELDS = tuple(SourceTrace.model_fields)


@dataclass(frozen=True)
class ColumnMapping:
    """Where a row keeps its trace and metadata (column names, or `fixed` values for every row).

    Leave the trace columns unset to let `resolve` recognise the shape from a file's columns.
    """

    messages: str | None = None
    problem: str | None = None
    reasoning: str | None = None
    answer: str | None = None
    source_trace: bool = False
    id: str | None = None
    domain: str | None = "domain"
    source: str | None = "source"
    difficulty: str | None = "difficulty"
    fixed: Mapping[str, str | int] = field(default_factory=dict)

    def resolve(self, names: Sequence[str]) -> ColumnMapping:
        """This mapping completed for a file with columns `names`; ValueError explains what is missing."""
        present, listed = set(names), ", ".join(names) or "none"
        renamed_metadata = [getattr(self, m) for m in METADATA if getattr(self, m) != m]
        explicit = [self.messages, self.problem, self.reasoning, self.answer, self.id, *renamed_metadata]
        if missing := [c for c in explicit if c and c not in present]:
            raise ValueError(f"the input has no column {', '.join(missing)}; its columns: {listed}")
        columns_shape = bool(self.problem or self.reasoning or self.answer)
        if columns_shape and not (self.problem and self.reasoning):
            raise ValueError("--problem-column and --reasoning-column are both needed (--answer-column is optional)")
        if columns_shape and self.messages:
            raise ValueError("give either --messages-column or the problem/reasoning/answer columns, not both")
        mapping = self if (columns_shape or self.messages or self.source_trace) else _guess_shape(self, present, listed)
        updates: dict[str, str | None] = {}
        if mapping.id is None:
            updates["id"] = next((c for c in ("id", "task_id") if c in present), None)
        for name in METADATA:
            if name in self.fixed or getattr(mapping, name) not in present:
                if name not in self.fixed and name != "difficulty":
                    raise ValueError(
                        f"the input has no {name!r} column: name one with --{name}-column, or give every "
                        f"row the same value with --set {name}=VALUE (columns: {listed})"
                    )
                updates[name] = None
        return replace(mapping, **updates)

    def columns(self) -> list[str]:
        """The columns a conversion reads (the others are never loaded)."""
        if self.source_trace:
            trace = list(_SOURCE_TRACE_FIELDS)
        else:
            trace = [c for c in (self.messages, self.problem, self.reasoning, self.answer) if c]
        return [*trace, *(c for c in (self.id, *self.metadata_columns()) if c and c not in trace)]

    def metadata_columns(self) -> list[str]:
        return [c for c in (self.domain, self.source, self.difficulty) if c]

    def metadata(self, row: Mapping[str, Any]) -> dict[str, Any]:
        values = {}
        for name in METADATA:
            column = getattr(self, name)
            values[name] = self.fixed[name] if name in self.fixed else row.get(column) if column else None
        return values

    def stratum(self, row: Mapping[str, Any]) -> Stratum | None:
        """The row's (domain, source, difficulty), or None when it has no usable domain."""
        values = self.metadata(row)
        if not isinstance(values["domain"], str):
            return None
        return (values["domain"], stratum_value(values["source"]), stratum_value(values["difficulty"]))

    def to_trace(self, row: Mapping[str, Any]) -> SourceTrace:
        """Convert a row; raises `TraceRejected` with the reason when it cannot be used."""
        problem, assistant = self._texts(row)
        return SourceTrace.from_openthoughts(
            {
                "conversations": [{"from": "human", "value": problem}, {"from": "gpt", "value": assistant}],
                "id": row.get(self.id) if self.id else None,
                **self.metadata(row),
            }
        )

    def _texts(self, row: Mapping[str, Any]) -> tuple[Any, Any]:
        if self.messages:
            return _conversation_texts(row.get(self.messages))
        if self.source_trace:
            parts = {name: row.get(name) for name in ("think_prefix", "reasoning", "answer_prefix", "answer")}
            _require_strings(parts)
            text = f"{parts['think_prefix']}{THINK_OPEN}{parts['reasoning']}{THINK_CLOSE}"
            return row.get("problem"), text + parts["answer_prefix"] + parts["answer"]
        problem, reasoning = row.get(self.problem or ""), row.get(self.reasoning or "")
        answer = row.get(self.answer) if self.answer else ""
        _require_strings({"reasoning": reasoning, "answer": answer})
        if THINK_OPEN in reasoning:
            return problem, reasoning + (f"\n{answer}" if answer else "")
        return problem, f"{THINK_OPEN}{reasoning}{THINK_CLOSE}\n{answer}"

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "fixed": dict(self.fixed)}


def _guess_shape(mapping: ColumnMapping, present: set[str], listed: str) -> ColumnMapping:
    if "conversations" in present:
        return replace(mapping, messages="conversations")
    if present.issuperset(_SOURCE_TRACE_FIELDS):
        return replace(mapping, source_trace=True)
    if "messages" in present:
        return replace(mapping, messages="messages")
    raise ValueError(
        f"cannot tell which columns hold the trace (columns: {listed}): pass --messages-column, or "
        "--problem-column and --reasoning-column (and --answer-column)"
    )


def _conversation_texts(turns: Any) -> tuple[Any, Any]:
    """(problem, assistant text) of a conversation in either turn style."""
    if not isinstance(turns, list) or not turns:
        raise TraceRejected("bad_conversations", "the messages column is missing or not a list")
    by_role: dict[str, list[Any]] = {}
    for turn in turns:
        if not isinstance(turn, Mapping):
            raise TraceRejected("bad_conversations", f"a turn is a {type(turn).__name__}, not an object")
        role = turn.get("from", turn.get("role"))
        by_role.setdefault(_ROLES.get(role, role), []).append(turn.get("value", turn.get("content")))
    humans, gpts = by_role.get("human", []), by_role.get("gpt", [])
    if len(humans) != 1 or len(gpts) != 1:
        raise TraceRejected(
            "bad_conversations", f"expected one user and one assistant turn, got {len(humans)} and {len(gpts)}"
        )
    return humans[0], gpts[0]


def _require_strings(values: Mapping[str, Any]) -> None:
    for name, value in values.items():
        if not isinstance(value, str):
            raise TraceRejected("not_a_string", f"{name} is {type(value).__name__}, not a string")
