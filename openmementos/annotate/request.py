"""The annotate stage's options: what the mementos depend on (`RecipeSettings`) and how the stage runs."""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator

from openmementos.llm.options import EndpointOptions
from openmementos.mementos import MementoRules
from openmementos.options import Cli, ExecutorOptions, InDir, OutDir, Request

STAGE = "annotate"
EXTRACTIVE = "extractive"
"""The offline, deterministic annotator (`--model extractive`)."""
RECIPE_PANEL = "Recipe (LLM annotators)"
ESTIMATE_PANEL = "Estimate"
REPORT_FILE = "annotate_report.json"
"""The run report in the output folder: tokens, cost, pass rates and quarantine reasons."""


PER_MEMENTO, PER_TRACE, JUDGE_OFF = "per-memento", "per-trace", "off"
JudgeMode = Literal["per-memento", "per-trace", "off"]


def _judge_mode(value: Any) -> Any:
    """`judge: true/false` (pipeline files and library calls written before the modes) as a mode."""
    if isinstance(value, bool):
        return PER_MEMENTO if value else JUDGE_OFF
    return value


class RecipeSettings(MementoRules, Request):
    """How an LLM annotates a trace: the model, the judge loop and the rules a memento must pass."""

    model: str = Field(description="Annotator LLM.")
    judge: Annotated[JudgeMode, BeforeValidator(_judge_mode), Cli(panel=RECIPE_PANEL)] = Field(
        PER_MEMENTO,
        description="How mementos are judged and weak ones refined. per-memento: one judge call per memento "
        "and one refinement per weak memento (the paper's recipe); per-trace: one judge call per round for all "
        "mementos of a trace (its blocks and the rubric sent once) and one refinement call for all weak ones, "
        "about 0.6x the cost with prefix caching; off: single pass, compress only.",
    )
    threshold: Annotated[float, Cli(panel=RECIPE_PANEL)] = Field(
        8.0, ge=0, le=10, description="Judge score (0-10) a memento must reach."
    )
    max_rounds: Annotated[int, Cli(panel=RECIPE_PANEL)] = Field(
        2, ge=1, description="Judge rounds per memento, refinements between."
    )
    max_reasks: Annotated[int, Cli(panel=RECIPE_PANEL)] = Field(
        2, ge=0, description="Follow-up requests for mementos that are missing or break a rule."
    )
    temperature: Annotated[float, Cli(panel=RECIPE_PANEL)] = Field(
        0.0, ge=0, description="Sampling temperature; 1 for models that take no other (o-series, gpt-5)."
    )

    @property
    def judged(self) -> bool:
        return self.judge != JUDGE_OFF

    def recipe(self) -> RecipeSettings:
        """Only the fields of `RecipeSettings` (a request carries more)."""
        return RecipeSettings(**{name: getattr(self, name) for name in RecipeSettings.model_fields})


class AnnotateRequest(RecipeSettings, EndpointOptions, ExecutorOptions):
    """Annotate a `segment` folder into OUT_DIR with an LLM, or offline with `--model extractive`."""

    in_dir: InDir = Field(description="Output folder of `segment` (SegmentedTrace shards).")
    out_dir: OutDir = Field(description="Where AnnotatedTrace shards, quarantine and the summary go.")
    model: str | None = Field(  # type: ignore[assignment]
        None,
        description="Annotator LLM (e.g. gpt-4.1-mini, or the model a vLLM server serves), or 'extractive' for "
        "the offline, deterministic annotator. Default: extractive when no endpoint or key is configured.",
    )
    batch: bool = Field(False, description="Use the OpenAI Batch API (half price, results within 24 h).")
    poll_interval: float = Field(30.0, ge=0.01, description="Seconds between batch status checks.")
    limit: int | None = Field(None, ge=0, description="Annotate only the first N traces (trial runs).")
    estimate: Annotated[bool, Cli(panel=ESTIMATE_PANEL)] = Field(
        False,
        description="Only print what this run would send and cost: requests, prompt/completion/cached tokens "
        "and US$ per trace and for the whole input, standard, with cached prefixes and with the Batch API. "
        "Sends nothing, writes nothing, needs no API key.",
    )
    expected_pass_rate: Annotated[float | None, Cli(panel=ESTIMATE_PANEL)] = Field(
        None,
        ge=0,
        le=1,
        description="For --estimate: share of first drafts the judge passes. Default: 0.28, the published "
        "single-pass rate (refined mementos: 0.90).",
    )

    @model_validator(mode="after")
    def _model_named_for_an_endpoint(self) -> AnnotateRequest:
        configured = (
            self.base_url or self.api_key or os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY")
        )
        if not self.model and configured:
            raise ValueError(
                "an endpoint or API key is configured: name the annotator LLM with --model, "
                "or pass --model extractive for the offline annotator"
            )
        return self

    def secret_required(self, name: str) -> bool | None:
        return None if self.annotator() == EXTRACTIVE else super().secret_required(name)

    def annotator(self) -> str:
        """The model to annotate with: `--model`, else the offline extractive annotator."""
        return self.model or EXTRACTIVE

    def recipe(self) -> RecipeSettings:
        fields: dict[str, Any] = {name: getattr(self, name) for name in RecipeSettings.model_fields}
        return RecipeSettings(**{**fields, "model": self.annotator()})
