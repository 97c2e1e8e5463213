"""The validation report: each rule with its failing traces, counted from the quarantine files."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openmementos.runtime.manifest import Manifest
from openmementos.runtime.shardio import read_quarantine
from openmementos.validate.request import STAGE
from openmementos.validate.rules import RULES


@dataclass(frozen=True)
class RuleResult:
    rule: str
    description: str
    failures: int
    examples: list[str]


@dataclass(frozen=True)
class ValidationReport:
    """What a validate folder holds: how many traces passed, and each rule's failures."""

    traces: int
    passed: int
    quarantined: int
    rules: list[RuleResult]
    options: dict[str, Any]

    @property
    def ok(self) -> bool:
        return self.quarantined == 0

    def to_json(self) -> dict[str, Any]:
        return {
            "traces": self.traces,
            "passed": self.passed,
            "quarantined": self.quarantined,
            "rules": [vars(r) for r in self.rules],
            "options": self.options,
        }


def build_report(manifest: Manifest, out_dir: Path, examples: int = 3) -> ValidationReport:
    """Count each rule's failing traces from the quarantine files (so resumed shards count too)."""
    counts: Counter[str] = Counter()
    shown: dict[str, list[str]] = {}
    for record in read_quarantine(out_dir):
        if record.stage != STAGE:
            continue
        messages = dict(line.split(": ", 1) for line in record.detail.splitlines() if ": " in line)
        for rule in record.reason.split(","):
            counts[rule] += 1
            if len(shown.setdefault(rule, [])) < examples:
                shown[rule].append(f"{record.id}: {messages.get(rule, '')}")
    results = [RuleResult(rule, description, counts[rule], shown.get(rule, [])) for rule, description in RULES.items()]
    return ValidationReport(
        traces=manifest.rows + manifest.quarantined,
        passed=manifest.rows,
        quarantined=manifest.quarantined,
        rules=results,
        options=manifest.options,
    )
