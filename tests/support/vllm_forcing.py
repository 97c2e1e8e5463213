"""A vLLM (v1) logits processor that forces the tokens of `support.forced_tokens.block_script`.

Pass the class as `LLM(..., logits_processors=[ForcedTokens])` and the script per request as
`SamplingParams(extra_args=as_extra_args(script))`. Needs vLLM (import it only in vLLM tests).
"""

from __future__ import annotations

import torch
from vllm.v1.sample.logits_processor import AdapterLogitsProcessor

from support.forced_tokens import FORCED_ARG


class ForcedTokens(AdapterLogitsProcessor):
    """At each scripted step, every token but the scripted one gets -inf."""

    def is_argmax_invariant(self) -> bool:
        return False

    def new_req_logits_processor(self, params):
        pairs = (params.extra_args or {}).get(FORCED_ARG)
        if not pairs:
            return None
        script = {int(step): int(token) for step, token in pairs}

        def force(output_ids: list[int], logits: torch.Tensor) -> torch.Tensor:
            token = script.get(len(output_ids))
            if token is None:
                return logits
            forced = torch.full_like(logits, float("-inf"))
            forced[token] = 0.0
            return forced

        return force
