"""The `segment` stage: lossless sentences, boundary scores and optimal blocks.

* `request`: the options (`SegmentRequest`, `SegmentSettings`); `stage`: one trace and the stage on
  shards (`run_segment`); `scorers`: boundary scores by rules; `llm_scorer`: boundary scores by an
  LLM; `partition`: the exact optimal blocks; `statistics`: blocks per trace and tokens per block;
  `explain`: one trace's blocks and why; `estimate`: what `--scorer llm` will send and cost. The
  lossless sentence splitter is `openmementos.sentences` (download's filter uses it too).
"""

from typing import TYPE_CHECKING

from openmementos.lazy import lazy_exports

_EXPORTS = {
    "SegmentRequest": "request",
    "SegmentSettings": "request",
    "SegmentResult": "stage",
    "run_segment": "stage",
    "estimate_segment": "estimate",
}
__all__ = ["SegmentRequest", "SegmentResult", "SegmentSettings", "estimate_segment", "run_segment"]
__getattr__ = lazy_exports(__name__, _EXPORTS)

if TYPE_CHECKING:
    from openmementos.segment.estimate import estimate_segment
    from openmementos.segment.request import SegmentRequest, SegmentSettings
    from openmementos.segment.stage import SegmentResult, run_segment
