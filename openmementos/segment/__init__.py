"""The `segment` stage: lossless sentences, boundary scores and optimal blocks.

* `request`: the options (`SegmentRequest`, `SegmentSettings`); `stage`: one trace and the stage on
  shards (`run_segment`); `sentences`: the lossless splitter; `scorers`: boundary scores by rules;
  `llm_scorer`: boundary scores by an LLM; `partition`: the exact optimal blocks; `explain`: one
  trace's blocks and why.
"""

from typing import TYPE_CHECKING

from openmementos.lazy import lazy_exports

_EXPORTS = {
    "SegmentRequest": "request",
    "SegmentSettings": "request",
    "SegmentResult": "stage",
    "run_segment": "stage",
}
__all__ = ["SegmentRequest", "SegmentResult", "SegmentSettings", "run_segment"]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from openmementos.segment.request import SegmentRequest, SegmentSettings
    from openmementos.segment.stage import SegmentResult, run_segment
