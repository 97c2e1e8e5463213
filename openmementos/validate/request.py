"""The validate stage's options."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from openmementos.options import ExecutorOptions, InDir, OutDir
from openmementos.validate.rules import ValidationRules

STAGE = "validate"


class ValidateRequest(ValidationRules, ExecutorOptions):
    """Validate a finished `annotate` folder into OUT_DIR (the rule bounds are `ValidationRules`')."""

    in_dir: InDir = Field(description="A finished `annotate` output folder.")
    out_dir: OutDir = Field(
        description="Where the traces that pass go (what `publish` reads); failures go to OUT_DIR/quarantine."
    )
    report: Path | None = Field(None, description="Also write the rule -> failures report as JSON to this file.")
    strict: bool = Field(False, description="Exit with status 1 if any trace failed a rule (the command).")

    def rules(self) -> ValidationRules:
        return ValidationRules(**{name: getattr(self, name) for name in ValidationRules.model_fields})
