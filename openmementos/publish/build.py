"""Building a publish: validated traces as the public `default` and `full` configs, with a card and plots.

A publish first *builds* the whole dataset in a staging folder (then `targets` switches it in):

    README.md                               the card (cards/dataset_card.md filled in)
    data/train-00000-of-0000N.parquet       `default` rows (DefaultRow)
    full/train-00000-of-0000N.parquet       `full` rows (FullRow), shard i holds the same traces as data/ shard i
    plots/*.png                             the card's figures

Rows keep the validated order (shard, then row) and shards hold `rows_per_shard` traces, so the same
input always gives the same files, byte for byte. Only the output of `openmementos validate` can be
published.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from openmementos.publish.card import CONFIG_FOLDERS, CardInputs, ConfigInfo, StageRecord, render_card
from openmementos.publish.request import PublishRequest
from openmementos.runtime.manifest import (
    MANIFEST,
    Manifest,
    StageError,
    iter_stage,
    read_input,
    read_manifest,
    require_finished,
)
from openmementos.runtime.progress import row_progress
from openmementos.runtime.shardio import ShardWriter
from openmementos.schema import PUBLIC_CONFIGS, AnnotatedTrace
from openmementos.stats import FigureFrame, dataset_stats, write_plots
from openmementos.stats.figures import BATCH as STATS_BATCH
from openmementos.validate.report import build_report
from openmementos.validate.request import STAGE as VALIDATE_STAGE

CARD = "README.md"
PLOTS_DIR = "plots"
MANAGED = (CARD, *(f"{folder}/" for folder in CONFIG_FOLDERS.values()), f"{PLOTS_DIR}/")
"""What publish owns in a target: the card and everything under these folders."""
UNKNOWN_LICENSE = "unknown"
"""The card's licence when neither --license nor the source traces say one (the Hub accepts this id)."""


class PublishError(StageError):
    """The input cannot be published, or the target refused it."""


@dataclass(frozen=True)
class Build:
    """A dataset built in `folder`, ready to be switched in."""

    folder: Path
    files: list[str]
    """Paths relative to `folder`, sorted."""
    configs: list[ConfigInfo]
    traces: int
    sizes: dict[str, int]
    """Bytes of each file."""
    card: str


# --------------------------------------------------------------------------- building


def check_publishable(in_dir: Path) -> Manifest:
    """Refuse anything but a finished `validate` folder (only validated traces are published); its manifest."""
    try:
        manifest = read_input(in_dir, reader="publish", expects=VALIDATE_STAGE)
        require_finished(in_dir, manifest, manifest.shards)
    except StageError as error:
        raise PublishError(f"{error}: only validated traces are published") from None
    if manifest.rows == 0:
        raise PublishError(f"{in_dir}: no trace passed validation, nothing to publish")
    return manifest


def build(request: PublishRequest, folder: Path, load_id: str, progress: bool = True) -> Build:
    """Write both configs, the plots and the card for the validated traces of `request.in_dir` into `folder`."""
    in_dir = request.in_dir
    manifest = check_publishable(in_dir)
    n_shards = max(1, math.ceil(manifest.rows / request.rows_per_shard))
    figures = FigureFrame()
    with row_progress("publish: building", manifest.rows, progress) as advance:
        written = _write_configs(
            iter_stage(in_dir, AnnotatedTrace), folder, n_shards, request.rows_per_shard, figures, advance
        )
    if written != manifest.rows:
        raise PublishError(f"{in_dir}: its manifest counts {manifest.rows:,} traces but the shards hold {written:,}")
    frame = figures.frame()
    plots = write_plots(frame, folder / PLOTS_DIR)
    configs = [_config_info(folder, name, n_shards, written) for name in PUBLIC_CONFIGS]
    lineage = read_lineage([*(request.lineage or traced_lineage(in_dir)), in_dir])
    card = render_card(
        CardInputs(
            pretty_name=request.pretty_name or Path(load_id).name,
            load_id=load_id,
            license=request.license or source_license(lineage),
            stats=dataset_stats(frame),
            configs=configs,
            validation=build_report(manifest, in_dir),
            lineage=lineage,
            source_datasets=request.source_dataset or _hub_sources(lineage),
            tags=tuple(request.tag),
            language=tuple(request.language),
            plots=[f"{PLOTS_DIR}/{path.name}" for path in plots],
        )
    )
    (folder / CARD).write_text(card, encoding="utf-8")
    files = sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    return Build(folder, files, configs, written, {f: (folder / f).stat().st_size for f in files}, card)


def shard_path(config: str, index: int, count: int) -> str:
    return f"{CONFIG_FOLDERS[config]}/train-{index:05d}-of-{count:05d}.parquet"


def _write_configs(
    traces: Iterator[AnnotatedTrace],
    folder: Path,
    n_shards: int,
    rows_per_shard: int,
    figures: FigureFrame,
    advance: Callable[[], None],
) -> int:
    """Stream traces into both configs, `rows_per_shard` per shard; returns the rows written."""
    for name in CONFIG_FOLDERS.values():
        (folder / name).mkdir(parents=True, exist_ok=True)
    written = 0
    writers: dict[str, ShardWriter] = {}
    pending: list[AnnotatedTrace] = []  # counted for the statistics a batch at a time
    try:
        for trace in traces:
            if written % rows_per_shard == 0:
                for writer in writers.values():
                    writer.commit()
                index = written // rows_per_shard
                writers = {
                    name: ShardWriter(folder / shard_path(name, index, n_shards), model)
                    for name, model in PUBLIC_CONFIGS.items()
                }
            full = trace.to_full_row()  # `default` holds a subset of its columns: render the response once
            for name, model in PUBLIC_CONFIGS.items():
                writers[name].write(full.model_dump(include=set(model.model_fields)))
            pending.append(trace)
            if len(pending) == STATS_BATCH:
                figures.add_traces(pending)
                pending = []
            written += 1
            advance()
        figures.add_traces(pending)
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    for writer in writers.values():
        writer.commit()
    return written


def _config_info(folder: Path, name: str, n_shards: int, rows: int) -> ConfigInfo:
    import pyarrow.parquet as pq

    paths = [folder / shard_path(name, index, n_shards) for index in range(n_shards)]
    metadata = [pq.ParquetFile(path).metadata for path in paths]
    return ConfigInfo(
        name=name,
        rows=rows,
        files=len(paths),
        num_bytes=sum(m.row_group(i).total_byte_size for m in metadata for i in range(m.num_row_groups)),
        download_size=sum(path.stat().st_size for path in paths),
    )


def traced_lineage(folder: Path, most: int = 16) -> list[Path]:
    """The stage folders that led to `folder`, first to last, from the input folder each manifest records.

    The trail ends at a stage that read no stage folder (download) or at a folder that is gone.
    """
    trail: list[Path] = []
    seen = {folder.resolve()}
    while len(trail) < most and (folder / MANIFEST).exists():
        manifest = read_manifest(folder)
        source = manifest.in_dir or manifest.options.get("in_dir")  # older validate manifests: an option
        if not isinstance(source, str) or not (Path(source) / MANIFEST).exists() or Path(source).resolve() in seen:
            break
        folder = Path(source)
        seen.add(folder.resolve())
        trail.append(folder)
    return trail[::-1]


def source_license(lineage: Sequence[StageRecord]) -> str:
    """The licence `download` recorded for the traces it read (the Hub card's, the sample's), else `unknown`."""
    for record in lineage:
        source = record.options.get("input")
        if record.stage == "download" and isinstance(source, dict) and source.get("license"):
            return str(source["license"])
    return UNKNOWN_LICENSE


def read_lineage(folders: Sequence[Path]) -> list[StageRecord]:
    """The recipe's stages from their manifests, in the given order (folders without one are skipped)."""
    records = []
    for folder in folders:
        if (folder / MANIFEST).exists():
            manifest = read_manifest(folder)
            records.append(
                StageRecord(
                    stage=manifest.stage,
                    rows=manifest.rows,
                    quarantined=manifest.quarantined,
                    reasons=dict(manifest.reasons()),
                    options=manifest.options,
                )
            )
    return records


def _hub_sources(lineage: Sequence[StageRecord]) -> list[str]:
    """Hub datasets that a `download` stage of the recipe read."""
    sources = []
    for record in lineage:
        source = record.options.get("input")
        if record.stage == "download" and isinstance(source, dict) and source.get("kind") == "hub":
            sources.append(str(source["dataset"]))
    return sources
