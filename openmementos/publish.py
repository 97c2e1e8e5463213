"""Publishing: validated traces as the public `default` and `full` configs, with a card, to a folder or the Hub.

A publish first *builds* the whole dataset in a staging folder:

    README.md                               the card (cards/dataset_card.md filled in)
    data/train-00000-of-0000N.parquet       `default` rows (DefaultRow)
    full/train-00000-of-0000N.parquet       `full` rows (FullRow), shard i holds the same traces as data/ shard i
    plots/*.png                             the card's figures

Rows keep the validated order (shard, then row) and shards hold `rows_per_shard` traces, so the same
input always gives the same files, byte for byte. Then it *switches* the target to the new build in
one step: a folder is swapped in by rename; a Hub repo gets one commit with every added, changed and
removed file (large files go through LFS before the commit exists), so readers never see half a
dataset. Unchanged files are not uploaded again, and when nothing changed no commit is made.

Only the output of `openmementos validate` can be published.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from openmementos.card import CONFIG_FOLDERS, DEFAULT_TAGS, CardInputs, ConfigInfo, StageRecord, render_card
from openmementos.schema import PUBLIC_CONFIGS, AnnotatedTrace
from openmementos.shards import MANIFEST, Manifest, ShardWriter, iter_stage, read_manifest
from openmementos.stats import FigureFrame, dataset_stats, write_plots
from openmementos.stats.figures import BATCH as STATS_BATCH
from openmementos.validate import STAGE as VALIDATE_STAGE
from openmementos.validate import build_report

ROWS_PER_SHARD = 5000
CARD = "README.md"
PLOTS_DIR = "plots"
MANAGED = (CARD, *(f"{folder}/" for folder in CONFIG_FOLDERS.values()), f"{PLOTS_DIR}/")
"""What publish owns in a target: the card and everything under these folders."""


class PublishError(RuntimeError):
    """The input cannot be published, or the target refused it."""


@dataclass(frozen=True)
class PublishSettings:
    """What the card says beyond the data itself."""

    pretty_name: str | None = None
    """Default: the repo or folder name."""
    license: str = "apache-2.0"
    source_datasets: tuple[str, ...] = ()
    """Default: the Hub dataset that `download` read, when it read one."""
    tags: tuple[str, ...] = DEFAULT_TAGS
    language: tuple[str, ...] = ("en",)
    rows_per_shard: int = ROWS_PER_SHARD
    lineage: tuple[Path, ...] = ()
    """Stage folders of the recipe (download, segment, annotate): their manifests fill the card's recipe."""


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


@dataclass(frozen=True)
class PublishResult:
    target: str
    changed: bool
    build: Build
    commit: str | None = None
    """The Hub commit the repo is at after publishing (new or unchanged)."""
    removed: list[str] = field(default_factory=list)
    """Files of an earlier publish that this one removed (e.g. shards no longer needed)."""


# --------------------------------------------------------------------------- building


def check_publishable(in_dir: Path) -> Manifest:
    """Refuse anything but a finished `validate` folder (only validated traces are published); its manifest."""
    if not (in_dir / MANIFEST).exists():
        raise PublishError(f"{in_dir} is not a stage folder; publish the output of `openmementos validate`")
    manifest = read_manifest(in_dir)
    if manifest.stage != VALIDATE_STAGE:
        raise PublishError(
            f"{in_dir} holds '{manifest.stage}' output; only validated traces are published: "
            f"run `openmementos validate {in_dir} VALIDATED_DIR` and publish VALIDATED_DIR"
        )
    if not manifest.complete:
        raise PublishError(
            f"{in_dir}: validation is not finished ({len(manifest.done)}/{manifest.shards_total} shards)"
        )
    if manifest.rows == 0:
        raise PublishError(f"{in_dir}: no trace passed validation, nothing to publish")
    return manifest


def build(in_dir: Path, folder: Path, load_id: str, settings: PublishSettings, progress: bool = True) -> Build:
    """Write both configs, the plots and the card for the validated traces of `in_dir` into `folder`."""
    manifest = check_publishable(in_dir)
    n_shards = max(1, math.ceil(manifest.rows / settings.rows_per_shard))
    figures = FigureFrame()
    with _row_progress(manifest.rows, progress) as advance:
        written = _write_configs(
            iter_stage(in_dir, AnnotatedTrace), folder, n_shards, settings.rows_per_shard, figures, advance
        )
    if written != manifest.rows:
        raise PublishError(f"{in_dir}: its manifest counts {manifest.rows:,} traces but the shards hold {written:,}")
    frame = figures.frame()
    plots = write_plots(frame, folder / PLOTS_DIR)
    configs = [_config_info(folder, name, n_shards, written) for name in PUBLIC_CONFIGS]
    lineage = read_lineage([*settings.lineage, in_dir])
    card = render_card(
        CardInputs(
            pretty_name=settings.pretty_name or Path(load_id).name,
            load_id=load_id,
            license=settings.license,
            stats=dataset_stats(frame),
            configs=configs,
            validation=build_report(manifest, in_dir),
            lineage=lineage,
            source_datasets=settings.source_datasets or _hub_sources(lineage),
            tags=settings.tags,
            language=settings.language,
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


@contextmanager
def _row_progress(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("[bold]publish: building"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=not enabled,
    ) as bar:
        task = bar.add_task("rows", total=total)
        yield lambda: bar.advance(task)


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


# --------------------------------------------------------------------------- switching a target


def _check_replaceable(target: Path) -> None:
    """Only an empty folder or an earlier publish may be replaced: never delete what publish did not write."""
    if not target.is_dir():
        raise PublishError(f"{target} exists and is not a folder")
    foreign = sorted(
        p.name
        for p in target.iterdir()
        if not any((f"{p.name}/" if p.is_dir() else p.name) == managed for managed in MANAGED)
    )
    if foreign:
        raise PublishError(
            f"{target} holds files that publish did not write ({', '.join(foreign[:5])}); "
            "publish to an empty or new folder, or to an earlier publish's folder"
        )


def _same_files(a: Path, b: Path, files: Sequence[str]) -> bool:
    current = sorted(p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file())
    return current == list(files) and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def publish_to_folder(in_dir: Path, target: Path, settings: PublishSettings, dry_run: bool = False) -> PublishResult:
    """Build next to `target`, then swap it in by rename; an identical earlier publish is left untouched."""
    if target.exists():
        _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.publishing")
    shutil.rmtree(staging, ignore_errors=True)  # a build that a crash left behind
    staging.mkdir()
    try:
        built = build(in_dir, staging, str(target), settings)
        if target.exists() and _same_files(staging, target, built.files):
            return PublishResult(str(target), changed=False, build=_moved(built, target))
        if dry_run:
            return PublishResult(str(target), changed=True, build=built)
        previous = target.with_name(f".{target.name}.previous")
        shutil.rmtree(previous, ignore_errors=True)
        if target.exists():
            target.rename(previous)
        staging.rename(target)
        shutil.rmtree(previous, ignore_errors=True)
        return PublishResult(str(target), changed=True, build=_moved(built, target))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _moved(built: Build, folder: Path) -> Build:
    return replace(built, folder=folder)


def publish_to_hub(
    in_dir: Path,
    repo_id: str,
    settings: PublishSettings,
    *,
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
) -> PublishResult:
    """Build in a temporary folder, then make one commit holding every change (none if nothing changed)."""
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    with tempfile.TemporaryDirectory(prefix="openmementos-publish-") as tmp:
        built = build(in_dir, Path(tmp), repo_id, settings)
        if dry_run:
            return PublishResult(repo_id, changed=True, build=built)
        try:
            return _commit(built, repo_id, private, token)
        except PublishError:
            raise
        except Exception as error:  # huggingface_hub's HTTP and validation errors: say what, never the token
            message = str(error).replace(token, "***") if token else str(error)
            raise PublishError(f"publishing to {repo_id} failed: {type(error).__name__}: {message}") from None


def _commit(built: Build, repo_id: str, private: bool, token: str | None) -> PublishResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    info = api.dataset_info(repo_id)
    if private and not info.private:
        raise PublishError(
            f"{repo_id} already exists and is public: --private cannot hide what is published there; "
            "make the repo private on the Hub first, or publish without --private"
        )
    remote = api.list_repo_files(repo_id, repo_type="dataset", revision=info.sha)
    stale = sorted(path for path in remote if path.startswith(MANAGED) and path not in built.files)
    operations = [CommitOperationAdd(path, str(built.folder / path)) for path in built.files]
    operations += [CommitOperationDelete(path) for path in stale]
    commit = api.create_commit(
        repo_id,
        operations,
        commit_message=f"Publish {built.traces:,} traces (default + full configs)",
        commit_description="Built by `openmementos publish` from validated traces.",
        repo_type="dataset",
        parent_commit=info.sha,  # refuse to overwrite a publish that landed meanwhile
    )
    return PublishResult(repo_id, changed=commit.oid != info.sha, build=built, commit=commit.oid, removed=stale)


def publish(
    in_dir: Path,
    *,
    repo_id: str | None = None,
    to: Path | None = None,
    private: bool = False,
    token: str | None = None,
    dry_run: bool = False,
    settings: PublishSettings = PublishSettings(),
) -> PublishResult:
    """Publish the validated traces of `in_dir` to a Hub dataset repo or a local folder (exactly one)."""
    if (repo_id is None) == (to is None):
        raise PublishError("give exactly one target: --repo-id ORG/NAME or --to DIR")
    if repo_id is not None:
        return publish_to_hub(in_dir, repo_id, settings, private=private, token=token, dry_run=dry_run)
    return publish_to_folder(in_dir, to, settings, dry_run=dry_run)
