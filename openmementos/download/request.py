"""The download stage's options. `input` / `sample` replace the Hub dataset."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from openmementos.download.filters import Filters
from openmementos.download.mapping import ColumnMapping
from openmementos.download.sampling import SelectionRequest
from openmementos.options import Cli, ExecutorOptions, OutDir

STAGE = "download"
DEFAULT_DATASET = "open-thoughts/OpenThoughts3-1.2M"
SELECTION_PANEL = "Stratified selection"
MAPPING_PANEL = "Column mapping (corpora not shaped like OpenThoughts3)"
FILTERS_PANEL = "Filters"
FIXED_FIELDS = ("domain", "source", "difficulty")


def parse_ratio(text: str) -> tuple[str, Fraction]:
    """`math=0.54` -> ("math", 27/50)."""
    domain, _, weight = text.partition("=")
    try:
        value = Fraction(weight.strip())
    except ValueError:
        raise ValueError(f"--ratio {text!r}: expected DOMAIN=WEIGHT, e.g. math=0.54") from None
    if not domain.strip() or value < 0:
        raise ValueError(f"--ratio {text!r}: expected DOMAIN=WEIGHT with a weight >= 0")
    return domain.strip(), value


def parse_fixed(text: str) -> tuple[str, str | int]:
    """`source=my-teacher` -> ("source", "my-teacher"); a difficulty is an integer."""
    name, _, value = text.partition("=")
    name = name.strip()
    if name not in FIXED_FIELDS or not value:
        raise ValueError(f"--set {text!r}: expected domain=..., source=... or difficulty=N")
    if name != "difficulty":
        return name, value
    try:
        return name, int(value)
    except ValueError:
        raise ValueError(f"--set {text!r}: the difficulty must be an integer") from None


class DownloadRequest(ExecutorOptions):
    """Fetch reasoning traces (the Hub, local files or the embedded sample) into SourceTrace shards."""

    out_dir: OutDir = Field(description="Output folder: part-*.parquet, quarantine/, manifest.json.")
    dataset: str | None = Field(None, description=f"Hub dataset id. Default: {DEFAULT_DATASET}.")
    revision: str = Field("main", description="Branch, tag or commit; recorded as the commit it resolves to.")
    config: str | None = Field(None, description="Dataset config (default: the dataset's default).")
    split: str = Field("train", description="Split to read (Hub datasets and save_to_disk folders).")
    input: Path | None = Field(
        None,
        description="Read local files instead of the Hub: a .parquet/.jsonl/.arrow file, a folder of them, a "
        "datasets save_to_disk folder, or the output of an earlier `openmementos download`.",
    )
    sample: bool = Field(False, description="Use the ~30 traces embedded in the package (offline; the demo's input).")
    retry_unreadable: bool = Field(
        False,
        description="Read again the input files an earlier run quarantined as unreadable (corrupt, truncated, "
        "another format); by default a rerun leaves them out.",
    )
    limit: Annotated[int | None, Cli(panel=SELECTION_PANEL)] = Field(
        None, ge=1, description="Draw exactly this many input rows (before the filters)."
    )
    ratio: Annotated[list[str], Cli(panel=SELECTION_PANEL, metavar="DOMAIN=WEIGHT")] = Field(
        [],
        description="Target share of a domain, repeatable (normalised to sum to 1). Default: the input's own shares.",
    )
    domains: Annotated[str | None, Cli(panel=SELECTION_PANEL)] = Field(
        None, description="Comma-separated domains to keep (e.g. math,code)."
    )
    seed: Annotated[int, Cli(panel=SELECTION_PANEL)] = Field(42, description="Seed of the selection hash.")
    min_sentences: Annotated[int, Cli(panel=FILTERS_PANEL)] = Field(
        2, ge=1, description="Quarantine traces whose reasoning has fewer sentences."
    )
    keep_cjk: Annotated[bool, Cli(panel=FILTERS_PANEL)] = Field(
        False, description="Keep traces with CJK characters (for corpora in those languages)."
    )
    messages_column: Annotated[str | None, Cli(panel=MAPPING_PANEL)] = Field(
        None, description="Column of {from,value} or {role,content} turns."
    )
    problem_column: Annotated[str | None, Cli(panel=MAPPING_PANEL)] = Field(None, description="Column of the problem.")
    reasoning_column: Annotated[str | None, Cli(panel=MAPPING_PANEL)] = Field(
        None, description="Column of the reasoning: with <think>...</think> (then an answer may follow it) or bare."
    )
    answer_column: Annotated[str | None, Cli(panel=MAPPING_PANEL)] = Field(
        None, description="Column of the final answer."
    )
    id_column: Annotated[str | None, Cli(panel=MAPPING_PANEL)] = Field(
        None, description="Column of a trace id (default: id or task_id, else a content hash)."
    )
    domain_column: Annotated[str, Cli(panel=MAPPING_PANEL)] = Field("domain", description="Column of the domain.")
    source_column: Annotated[str, Cli(panel=MAPPING_PANEL)] = Field("source", description="Column of the source.")
    difficulty_column: Annotated[str, Cli(panel=MAPPING_PANEL)] = Field(
        "difficulty", description="Column of the integer difficulty (optional)."
    )
    set_: Annotated[list[str], Cli(panel=MAPPING_PANEL, metavar="FIELD=VALUE")] = Field(
        [],
        alias="set",
        description="Give every row this domain, source or difficulty, e.g. --set source=my-teacher.",
    )

    @field_validator("ratio")
    @classmethod
    def _ratios(cls, texts: list[str]) -> list[str]:
        for text in texts:
            parse_ratio(text)
        return texts

    @field_validator("set_")
    @classmethod
    def _fixed(cls, texts: list[str]) -> list[str]:
        for text in texts:
            parse_fixed(text)
        return texts

    @model_validator(mode="after")
    def _one_input(self) -> DownloadRequest:
        if sum(map(bool, (self.dataset, self.input, self.sample))) > 1:
            raise ValueError("choose one of --dataset, --input and --sample")
        return self

    def mapping(self) -> ColumnMapping:
        return ColumnMapping(
            messages=self.messages_column,
            problem=self.problem_column,
            reasoning=self.reasoning_column,
            answer=self.answer_column,
            id=self.id_column,
            domain=self.domain_column,
            source=self.source_column,
            difficulty=self.difficulty_column,
            fixed=dict(map(parse_fixed, self.set_)),
        )

    def filters(self) -> Filters:
        return Filters(min_sentences=self.min_sentences, keep_cjk=self.keep_cjk)

    def selection(self) -> SelectionRequest | None:
        """The stratified selection asked for (--limit, --ratio or --domains), if any."""
        if self.limit is None and not self.ratio and not self.domains:
            return None
        return SelectionRequest(
            seed=self.seed,
            limit=self.limit,
            ratios=tuple(sorted(dict(map(parse_ratio, self.ratio)).items())),
            domains=tuple(d.strip() for d in (self.domains or "").split(",") if d.strip()),
        )
