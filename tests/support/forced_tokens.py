"""Teacher-forced block structure: which token to force at which generation step.

`block_script` lays out blocks and mementos as delimiters at fixed steps and leaves the steps between
them free (greedy or sampled by the model), or fills them with given tokens (`fill`) for a fully forced
run. The same script drives the HF reference (`forcing_sampler`) and vLLM
(`support.vllm_forcing.ForcedTokens`), so both backends see the same structure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from openmementos.train.attention import DelimiterIds

FORCED_ARG = "forced_tokens"
"""`SamplingParams.extra_args` key: list of `[step, token_id]` pairs."""


def block_script(
    delimiters: DelimiterIds,
    *,
    blocks: int,
    block_tokens: int,
    memento_tokens: int,
    answer_tokens: int = 0,
    stop_token: int | None = None,
    fill: int | None = None,
) -> dict[int, int]:
    """Step -> forced token for `blocks` blocks of `block_tokens` and mementos of `memento_tokens`.

    With `fill`, every free step is forced to that token as well (the generation is then fully fixed);
    with `stop_token`, it ends the generation after `answer_tokens` more steps.
    """
    script: dict[int, int] = {}
    step = 0

    def free(n: int) -> None:
        nonlocal step
        for _ in range(n):
            if fill is not None:
                script[step] = fill
            step += 1

    for _ in range(blocks):
        script[step] = delimiters.block_start
        step += 1
        free(block_tokens)
        script[step], script[step + 1] = delimiters.block_end, delimiters.summary_start
        step += 2
        free(memento_tokens)
        script[step] = delimiters.summary_end
        step += 1
    free(answer_tokens)
    if stop_token is not None:
        script[step] = stop_token
    return script


def as_extra_args(script: Mapping[int, int]) -> dict:
    return {FORCED_ARG: [[step, token] for step, token in sorted(script.items())]}


def forcing_sampler(script: Mapping[int, int]) -> Callable:
    """An HF `Sampler` (logits -> token) that forces the script and is greedy elsewhere."""
    calls = 0

    def sample(logits) -> int:
        nonlocal calls
        step, calls = calls, calls + 1
        return script[step] if step in script else int(logits.argmax())

    return sample
