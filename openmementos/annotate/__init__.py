"""Mementos for segmented traces: the LLM recipe (compress, judge, refine) and the offline annotator.

* `request`: the options (`AnnotateRequest`, `RecipeSettings`); `stage`: both annotators on shards
  (`run_annotate`); `recipe`: the per-trace flow through an LLM engine; `prompting`: its messages;
  `parsing`: reading the answers; `extractive`: the deterministic annotator; `accounting`: what a run
  did and spent; `estimate`: what a run will send and cost, before it sends anything (`estimate_annotate`).
"""

from typing import TYPE_CHECKING

from openmementos.lazy import lazy_exports

_EXPORTS = {
    "AnnotateRequest": "request",
    "RecipeSettings": "request",
    "AnnotateResult": "stage",
    "run_annotate": "stage",
    "CostEstimate": "estimate",
    "estimate_annotate": "estimate",
}
__all__ = ["AnnotateRequest", "AnnotateResult", "CostEstimate", "RecipeSettings", "estimate_annotate", "run_annotate"]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from openmementos.annotate.estimate import CostEstimate, estimate_annotate
    from openmementos.annotate.request import AnnotateRequest, RecipeSettings
    from openmementos.annotate.stage import AnnotateResult, run_annotate
