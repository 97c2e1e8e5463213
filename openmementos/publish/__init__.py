"""`publish`: validated traces as the public `default` and `full` configs with a card, to a folder or the Hub.

- `request`: the options (`PublishRequest`);
- `build`: the dataset built in a staging folder (configs, plots, card);
- `card`: the dataset card, rendered from the statistics, the validation report and the recipe's lineage;
- `targets`: switching a folder or a Hub repo to the build in one step (`run_publish`).
"""

from typing import TYPE_CHECKING

from openmementos.lazy import lazy_exports

_EXPORTS = {
    "PublishRequest": "request",
    "PublishError": "build",
    "PublishResult": "targets",
    "run_publish": "targets",
}
__all__ = ["PublishError", "PublishRequest", "PublishResult", "run_publish"]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from openmementos.publish.build import PublishError
    from openmementos.publish.request import PublishRequest
    from openmementos.publish.targets import PublishResult, run_publish
