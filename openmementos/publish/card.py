"""The dataset card (`README.md`) of a published dataset: Hub metadata plus a body from `cards/dataset_card.md`.

The template is Markdown with `${name}` placeholders (Python `string.Template`): `front_matter`,
`pretty_name`, `traces`, `domains`, `configs_table`, `recipe`, `stats_table`, `tokenizers`, `plots`,
`sources_table`, `load_id`, `limitations`, `license_text`. Everything they hold is computed here from
the published rows, their provenance and the manifests of the stages that made them, so the card
describes the data actually published. Rendering is pure and deterministic: the same inputs give the
same bytes, which keeps a second publish of the same data a no-op.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from string import Template
from typing import Any

from openmementos.publish.request import DEFAULT_TAGS
from openmementos.resources import read_card_template
from openmementos.schema import PUBLIC_CONFIGS, arrow_schema, features
from openmementos.stats import ALL, DatasetStats, comparison_rows
from openmementos.validate.report import ValidationReport

TEMPLATE = "dataset_card.md"
CONFIG_FOLDERS = {"default": "data", "full": "full"}
"""Config name -> folder of its parquet shards (`<folder>/train-*.parquet`)."""

_SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"))
_SOURCES_SHOWN = 25
_SECRET_OR_LOCAL = re.compile(r"(api_?key|secret|password|auth|(^|_)token$|url|dir$|path$|^files$|cache)", re.I)


@dataclass(frozen=True)
class ConfigInfo:
    """One published config: its rows, shard files and sizes (uncompressed Arrow bytes, parquet bytes)."""

    name: str
    rows: int
    files: int
    num_bytes: int
    download_size: int


@dataclass(frozen=True)
class StageRecord:
    """What one stage of the recipe did, from its manifest."""

    stage: str
    rows: int
    quarantined: int
    reasons: dict[str, int]
    options: dict[str, Any]


@dataclass(frozen=True)
class CardInputs:
    pretty_name: str
    load_id: str
    """What `load_dataset` takes: the repo id, or the folder."""
    license: str
    stats: DatasetStats
    configs: Sequence[ConfigInfo]
    validation: ValidationReport
    lineage: Sequence[StageRecord] = ()
    """The stages that made the data, first to last (validate included)."""
    source_datasets: Sequence[str] = ()
    tags: Sequence[str] = DEFAULT_TAGS
    language: Sequence[str] = ("en",)
    plots: Sequence[str] = field(default_factory=tuple)
    """Paths of the PNG plots, relative to the card."""


def render_card(inputs: CardInputs, template: str | None = None) -> str:
    """The full README.md: YAML front matter, then the template filled in."""
    text = Template(template if template is not None else read_card_template(TEMPLATE))
    return text.substitute(
        front_matter=front_matter(inputs),
        pretty_name=inputs.pretty_name,
        traces=f"{inputs.stats.traces:,}",
        domains=", ".join(f"{name} {d.traces:,}" for name, d in inputs.stats.domains.items() if name != ALL),
        configs_table=_configs_table(inputs.configs),
        recipe=_recipe(inputs),
        stats_table=_stats_table(inputs.stats),
        tokenizers=", ".join(inputs.stats.provenance.tokenizers) if inputs.stats.provenance else "cl100k_base",
        plots="\n\n".join(f"![{_plot_title(path)}]({path})" for path in inputs.plots),
        sources_table=_sources_table(inputs.stats),
        load_id=inputs.load_id,
        limitations=_limitations(inputs),
        license_text=_license_text(inputs),
    )


# --------------------------------------------------------------------------- metadata


def front_matter(inputs: CardInputs) -> str:
    """The card's YAML: configs, dataset_info (features derived from the schema), license, tags, ..."""
    from datasets.info import DatasetInfo, DatasetInfosDict
    from datasets.splits import SplitDict, SplitInfo
    from huggingface_hub import DatasetCardData

    card_data = DatasetCardData(
        language=list(inputs.language),
        license=inputs.license,
        pretty_name=inputs.pretty_name,
        size_categories=[size_category(inputs.stats.traces)],
        source_datasets=list(inputs.source_datasets) or None,
        task_categories=["text-generation"],
        tags=list(inputs.tags),
        configs=[
            {
                "config_name": config.name,
                "data_files": [{"split": "train", "path": f"{CONFIG_FOLDERS[config.name]}/train-*"}],
                **({"default": True} if config.name == "default" else {}),
            }
            for config in inputs.configs
        ],
    )
    infos = {}
    for config in inputs.configs:
        splits = SplitDict()
        splits.add(SplitInfo(name="train", num_bytes=config.num_bytes, num_examples=config.rows))
        infos[config.name] = DatasetInfo(
            features=features(PUBLIC_CONFIGS[config.name]),
            splits=splits,
            download_size=config.download_size,
            dataset_size=config.num_bytes,
            config_name=config.name,
        )
    DatasetInfosDict(infos).to_dataset_card_data(card_data)
    return card_data.to_yaml() + "\n"


def size_category(rows: int) -> str:
    """The Hub's size bucket for a row count."""
    return next((name for limit, name in _SIZE_CATEGORIES if rows < limit), "1M<n<10M")


# --------------------------------------------------------------------------- body parts


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> str:
    """A Markdown table; `align` has one letter per column, l(eft) or r(ight)."""
    align = ["---:" if letter == "r" else "---" for letter in align]
    lines = [header, align, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)


def _configs_table(configs: Sequence[ConfigInfo]) -> str:
    rows = [
        [
            f"`{c.name}`",
            ", ".join(f"`{f.name}` ({_type_name(f.type)})" for f in arrow_schema(PUBLIC_CONFIGS[c.name])),
            f"{c.rows:,}",
            f"`{CONFIG_FOLDERS[c.name]}/` ({c.files} file{'s' if c.files != 1 else ''}, {_megabytes(c.download_size)})",
        ]
        for c in configs
    ]
    return _table(["config", "columns", "rows", "files"], rows, "llrl")


def _type_name(arrow_type: Any) -> str:
    """`list<list<int64>>` rather than Arrow's `list<item: list<item: int64>>`."""
    return str(arrow_type).replace("item: ", "")


def _megabytes(size: int) -> str:
    return f"{size / 1e6:,.1f} MB" if size >= 100_000 else f"{size / 1e3:,.1f} kB"


def _stats_table(stats: DatasetStats) -> str:
    rows = comparison_rows(stats)
    return _table(
        ["", *stats.domains], [[label, *cells.values()] for label, cells in rows], "l" + "r" * len(stats.domains)
    )


def _sources_table(stats: DatasetStats) -> str:
    entries = [(d, s, n) for d, sources in stats.sources.items() for s, n in sources.items()]
    entries.sort(key=lambda e: (-e[2], e[0], e[1]))
    table = _table(["domain", "source", "traces"], [[d, s, f"{n:,}"] for d, s, n in entries[:_SOURCES_SHOWN]], "llr")
    hidden = entries[_SOURCES_SHOWN:]
    if hidden:
        table += f"\n\n...and {len(hidden):,} more sources with {sum(n for *_, n in hidden):,} traces."
    return table


def _plot_title(path: str) -> str:
    return path.rsplit("/", 1)[-1].removesuffix(".png").replace("_", " ")


def _recipe(inputs: CardInputs) -> str:
    lines = []
    if source := _source_line(inputs):
        lines.append(f"- **Source traces:** {source}")
    provenance = inputs.stats.provenance
    if provenance:
        lines += [
            "- **Memento writer (annotator):** " + _counts(provenance.annotator_models),
            "- **Prompt version:** " + _counts(provenance.prompt_versions),
            "- **Boundary scorer:** " + _counts(provenance.scorers),
            "- **Token counts:** " + _counts(provenance.tokenizers),
        ]
        usage = provenance.usage
        if usage.requests:
            lines.append(
                f"- **LLM usage:** {usage.requests:,} requests, {usage.prompt_tokens:,} prompt and "
                f"{usage.completion_tokens:,} completion tokens (about ${usage.cost_usd:,.2f})"
            )
    judge = inputs.stats.judge
    if judge:
        rounds = ", ".join(
            f"{n} round{'s' if n != 1 else ''}: {count:,}" for n, count in provenance.judge_rounds.items()
        )
        lines.append(
            f"- **Judge:** {judge.judged_mementos:,} mementos scored 0-10; score of the version kept: mean "
            f"{judge.final_score.mean:.2f}, median {judge.final_score.median:g} ({rounds})"
        )
    else:
        lines.append("- **Judge:** none (mementos were not scored)")
    lines.append("- **Validation:** " + _validation_line(inputs.validation))
    if inputs.lineage:
        lines += ["", _lineage_table(inputs.lineage)]
    return "\n".join(lines)


def _source_line(inputs: CardInputs) -> str | None:
    """Where the traces came from: what the `download` stage read, else the declared source datasets."""
    for record in inputs.lineage:
        source = record.options.get("input")
        if record.stage != "download" or not isinstance(source, dict):
            continue
        if source.get("kind") == "hub":
            return f"`{source.get('dataset')}` (split `{source.get('split')}`, commit `{source.get('commit')}`)"
        if source.get("kind") == "sample":
            return "the sample of reasoning traces embedded in `openmementos` (written for the project)"
        return f"local files ({len(source.get('files') or [])} files)"
    return ", ".join(f"`{s}`" for s in inputs.source_datasets) or None


def _counts(counts: dict[Any, int]) -> str:
    if len(counts) == 1:
        return f"`{next(iter(counts))}`"
    return ", ".join(f"`{name}` ({count:,} traces)" for name, count in counts.items())


def _validation_line(report: ValidationReport) -> str:
    checked = [r for r in report.rules if r.rule != "memento_ascii" or report.options.get("require_ascii")]
    if report.ok:
        return f"all {report.traces:,} traces passed the {len(checked)} rules of `openmementos validate`"
    failed = ", ".join(f"`{r.rule}` {r.failures:,}" for r in sorted(checked, key=lambda r: -r.failures) if r.failures)
    return (
        f"{report.passed:,} of {report.traces:,} traces passed the {len(checked)} rules of `openmementos validate`; "
        f"{report.quarantined:,} were left out (failures per rule: {failed})"
    )


def _lineage_table(lineage: Sequence[StageRecord]) -> str:
    rows = []
    for record in lineage:
        reasons = ", ".join(f"{reason} {count:,}" for reason, count in _top(record.reasons))
        quarantined = f"{record.quarantined:,}" + (f" ({reasons})" if reasons else "")
        settings = ", ".join(f"{key}={value}" for key, value in public_options(record.options).items())
        rows.append([f"`{record.stage}`", f"{record.rows:,}", quarantined, settings.replace("|", "\\|")])
    return _table(["stage", "traces out", "left out", "settings"], rows, "lrrl")


def _top(reasons: dict[str, int], n: int = 4) -> list[tuple[str, int]]:
    return sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def public_options(options: dict[str, Any]) -> dict[str, Any]:
    """A stage's settings fit for a public card: scalars only, never secrets, URLs or local paths."""
    public: dict[str, Any] = {}
    for key, value in options.items():
        if _SECRET_OR_LOCAL.search(key):
            continue
        if isinstance(value, dict):
            public.update({f"{key}.{k}": v for k, v in public_options(value).items() if "." not in k})
        elif isinstance(value, str | int | float | bool) and not (isinstance(value, str) and value.startswith("/")):
            public[key] = value
    return public


def _limitations(inputs: CardInputs) -> str:
    provenance = inputs.stats.provenance
    models = list(provenance.annotator_models) if provenance else []
    items = []
    if "extractive" in models:
        items.append(
            "Mementos marked `extractive` were written by the offline extractive annotator: it picks "
            "equations, values and conclusions out of each block without an LLM. They are copied sentences, "
            "not written summaries: they show the format and exercise the pipeline, but do not train a "
            "model you care about on them."
        )
    llms = [m for m in models if m != "extractive"]
    if llms:
        items.append(
            f"Mementos written by {', '.join(f'`{m}`' for m in llms)} can still omit or misstate what a block "
            "found; the judge reduces this but does not prove faithfulness. Audit a sample before training."
        )
    if not provenance:
        items.append("The rows carry no provenance: who wrote the mementos is not recorded in this card.")
    items += [
        "A memento records what its block concluded, including the teacher model's mistakes; nothing here "
        "checks that a trace's final answer is correct.",
        "Token figures are counted with the tokenizer named above; your model's tokenizer gives other counts, "
        "and the peak-KV ratio is a simulation from those counts, not a measurement.",
    ]
    if inputs.validation.quarantined:
        items.append(
            f"The {inputs.validation.quarantined:,} traces that failed validation are left out, so the domain "
            "mix can differ slightly from the source's."
        )
    return "\n".join(f"- {item}" for item in items)


def _license_text(inputs: CardInputs) -> str:
    if inputs.license == "unknown":
        text = "No licence is declared: the licence of the source traces was not recorded (publish with --license)."
    else:
        text = f"Released under `{inputs.license}`."
    if inputs.source_datasets:
        sources = ", ".join(f"`{s}`" for s in inputs.source_datasets)
        text += f" The traces come from {sources}; its license and terms apply to them as well."
    text += " Check the terms of the model that wrote the mementos before redistributing derived data."
    return text
