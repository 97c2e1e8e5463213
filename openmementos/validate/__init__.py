"""`validate`: every invariant and memento rule, checked before anything can be published.

- `rules`: the checks of one row (`check_row`, `RULES`, `ValidationRules`);
- `stage`: the stage over shards (`run_validate(ValidateRequest) -> ValidateResult`);
- `report`: the rule -> failures report (`build_report`).
"""

from typing import TYPE_CHECKING

from openmementos.lazy import lazy_exports

_EXPORTS = {
    "RULES": "rules",
    "ValidationRules": "rules",
    "check_row": "rules",
    "STAGE": "request",
    "ValidateRequest": "request",
    "ValidateResult": "stage",
    "run_validate": "stage",
    "ValidationReport": "report",
    "build_report": "report",
}
__all__ = [
    "RULES",
    "STAGE",
    "ValidateRequest",
    "ValidateResult",
    "ValidationReport",
    "ValidationRules",
    "build_report",
    "check_row",
    "run_validate",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from openmementos.validate.report import ValidationReport, build_report
    from openmementos.validate.request import STAGE, ValidateRequest
    from openmementos.validate.rules import RULES, ValidationRules, check_row
    from openmementos.validate.stage import ValidateResult, run_validate
