"""Where input rows come from: a Hub dataset, local files, or the embedded sample.

Every input is a list of `InputFile`s, one per output shard. An `InputFile` is a small picklable
description, so a worker process can reopen it; `iter_rows` yields `(row_index, row)` pairs, a record
batch at a time, so memory stays flat however large the file.

Hub files are fetched whole with `hf_hub_download` and then read locally. Compared with streaming
through `HfFileSystem`, the download is resumable after a crash (a rerun continues the partial file),
verified against the Hub's ETag, and cached where `datasets` keeps the same files, so a shard is never
fetched twice. The metadata pass of a stratified selection (`strata.py`) is the exception: it reads a
few small columns of every file not fetched yet through `HfFileSystem` range requests (`open_on_hub`),
without fetching whole shards.

A file that cannot be decoded (corrupt, truncated, or not in the format its name says) raises
`UnreadableInput` naming it (`reading`): the stage quarantines that file and goes on with the others.
Fetching errors are not decoding errors: they are retried, then end the run (a rerun resumes).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from openmementos import resources
from openmementos.runtime.manifest import MANIFEST, data_files
from openmementos.runtime.selection import ShardSelection
from openmementos.runtime.stage import UnreadableInput, input_shards

BATCH_ROWS = 256
DOWNLOAD_ATTEMPTS = 5
FORMATS = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".arrow": "arrow"}
SAMPLE_LICENSE = "mit"
"""The embedded sample was written for this project and ships under its licence."""
DECODING_ERRORS: tuple[type[Exception], ...] = (pa.ArrowException, ValueError)
"""What a reader raises for bytes it cannot decode (pyarrow's errors, UnicodeDecodeError, ...)."""


@dataclass(frozen=True)
class Unreadable:
    """A row that could not be decoded (e.g. a line of a JSON-lines file that is not a JSON object)."""

    detail: str
    text: str


Row = dict[str, Any] | Unreadable


@dataclass(frozen=True)
class InputFile:
    """One input file. `label` names it in row keys and quarantine ids (its path in the repo or folder)."""

    label: str
    format: str
    path: str = ""
    repo_id: str = ""
    revision: str = ""

    def local_path(self) -> str:
        """The file on local disk, downloaded (resumably, into the Hub cache) when it lives on the Hub.

        Network failures are retried with backoff; each retry continues the partial file.
        """
        if not self.repo_id:
            return self.path
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError
        from tenacity import Retrying, retry_if_not_exception_type, stop_after_attempt, wait_exponential

        retrying = Retrying(
            stop=stop_after_attempt(DOWNLOAD_ATTEMPTS),
            wait=wait_exponential(multiplier=2, max=60),
            retry=retry_if_not_exception_type((EntryNotFoundError, RepositoryNotFoundError, OfflineModeIsEnabled)),
            reraise=True,
        )
        return retrying(hf_hub_download, self.repo_id, self.label, repo_type="dataset", revision=self.revision)

    def cached_path(self) -> str | None:
        """The file on local disk if it is there already (a local file, or a Hub file in the cache), else None."""
        if not self.repo_id:
            return self.path
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(self.repo_id, self.label, revision=self.revision, repo_type="dataset")
        return found if isinstance(found, str) else None


@dataclass(frozen=True)
class HubInput:
    repo_id: str
    commit: str
    files: list[InputFile]
    license: str | None = None
    """The licence the dataset's card declares, if any."""


@contextmanager
def reading(file: InputFile, local: bool = True, also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turn an error decoding `file` (or one of `also`) into `UnreadableInput` with the reader's reason.

    On a local file an `OSError` is a decoding error too (pyarrow raises one for corrupt pages); over the
    network (`local` False) it is a transport error and propagates.
    """
    errors = (*DECODING_ERRORS, *also, OSError) if local else (*DECODING_ERRORS, *also)
    try:
        yield
    except UnreadableInput:
        raise
    except errors as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UnreadableInput(file.label, reason) from error


def iter_rows(file: InputFile, columns: Sequence[str] | None = None) -> Iterator[tuple[int, Row]]:
    """The rows of a file with their index (the line number for JSON lines), reading only `columns`.

    Raises `UnreadableInput` when the file cannot be decoded, possibly after some rows.
    """
    path = file.local_path()  # fetched first: a fetching error is no reason to quarantine the file
    with reading(file):
        if file.format == "jsonl":
            yield from _jsonl_rows(path)
        elif file.format == "parquet":
            yield from _parquet_rows(pq.ParquetFile(path), columns)
        elif file.format == "arrow":
            with pa.memory_map(path) as source:
                yield from _batch_rows(pa.ipc.open_stream(source), columns)
        else:
            raise ValueError(f"{file.label}: unsupported format {file.format!r}")


def has_rows(file: InputFile) -> bool:
    """Whether a file holds at least one row (a JSON-lines file: one non-blank line)."""
    return next(iter_rows(file), None) is not None


def open_on_hub(file: InputFile) -> Any:
    """A Hub file opened for range reads. No read-ahead cache: it would fetch megabytes of the big
    columns next to every small column chunk read."""
    from huggingface_hub import HfFileSystem

    return HfFileSystem().open(f"datasets/{file.repo_id}@{file.revision}/{file.label}", "rb", cache_type="none")


def _parquet_rows(parquet: pq.ParquetFile, columns: Sequence[str] | None) -> Iterator[tuple[int, Row]]:
    present = None if columns is None else present_columns(parquet.schema_arrow.names, columns)
    yield from _batch_rows(parquet.iter_batches(batch_size=BATCH_ROWS, columns=present), None)


def _batch_rows(batches: Any, columns: Sequence[str] | None) -> Iterator[tuple[int, Row]]:
    index = 0
    for batch in batches:
        if columns is not None:
            batch = batch.select(present_columns(batch.schema.names, columns))
        for start in range(0, batch.num_rows, BATCH_ROWS):
            for row in batch.slice(start, BATCH_ROWS).to_pylist():
                yield index, row
                index += 1


def present_columns(names: Sequence[str], columns: Sequence[str]) -> list[str]:
    """Those of `columns` that a file with columns `names` has, in the file's order."""
    return [name for name in names if name in columns]


def _jsonl_rows(path: str) -> Iterator[tuple[int, Row]]:
    with open(path, encoding="utf-8") as lines:
        for number, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                yield number, Unreadable(f"line {number + 1} is not valid JSON: {error}", line[:2000])
                continue
            if isinstance(row, dict):
                yield number, row
            else:
                detail = f"line {number + 1} is a JSON {type(row).__name__}, not an object"
                yield number, Unreadable(detail, line[:2000])


def column_names(file: InputFile, probe_rows: int = 1000) -> list[str]:
    """The columns of a file (for JSON lines: the keys found in its first `probe_rows` objects)."""
    if file.format == "parquet":
        path = file.cached_path()
        with reading(file, local=path is not None):
            if path is None:
                with open_on_hub(file) as handle:
                    return pq.read_schema(handle).names
            return pq.read_schema(path).names
    names: dict[str, None] = {}
    for _, row in itertools.islice(iter_rows(file), probe_rows):
        if isinstance(row, dict):
            names.update(dict.fromkeys(row))
    return list(names)


# --------------------------------------------------------------------------- resolving inputs


def hub_input(repo_id: str, revision: str, config: str | None, split: str) -> HubInput:
    """The data files of a Hub dataset's split, pinned to the commit that `revision` resolves to.

    Which files make up a config and split is decided by `datasets` (from the card's `configs:` or the
    usual file-name patterns), exactly as `load_dataset` would.
    """
    import datasets
    from huggingface_hub import HfApi
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = HfApi().dataset_info(repo_id, revision=revision)
    except RevisionNotFoundError as error:
        raise ValueError(f"dataset {repo_id} has no revision {revision!r}") from error
    except RepositoryNotFoundError as error:
        raise ValueError(f"dataset {repo_id} was not found on the Hub (or it is private: log in first)") from error
    except Exception as error:  # offline mode, refused connections, timeouts: each transport has its own types
        raise ValueError(f"cannot reach the Hub to read dataset {repo_id}: {error}") from error
    commit = info.sha or ""
    try:
        builder = datasets.load_dataset_builder(repo_id, config, revision=commit)
    except (datasets.exceptions.DatasetsError, FileNotFoundError, ValueError) as error:
        raise ValueError(f"cannot read dataset {repo_id} at {commit}: {error}") from error
    data_files = builder.config.data_files or {}
    if split not in data_files:
        raise ValueError(f"dataset {repo_id} has no split {split!r}; splits: {', '.join(data_files) or 'none'}")
    prefix = f"hf://datasets/{repo_id}@{commit}/"
    files = []
    for url in data_files[split]:
        if not url.startswith(prefix):
            raise ValueError(f"{url} is not a file of {repo_id} at {commit}")
        label = url[len(prefix) :]
        files.append(InputFile(label=label, format=_format(label), repo_id=repo_id, revision=commit))
    return HubInput(repo_id, commit, files, _card_license(info.card_data))


def _card_license(card_data: Any) -> str | None:
    """The licence id a dataset card's metadata declares (the first, when it lists several)."""
    declared = card_data.get("license") if card_data is not None else None
    if isinstance(declared, list):
        declared = declared[0] if declared else None
    return str(declared) if declared else None


def local_input(path: Path, split: str) -> list[InputFile]:
    """Files of a local input: one file, a folder of them, a `save_to_disk` folder or a stage's output."""
    path = path.resolve()
    if not path.exists():
        raise ValueError(f"{path} does not exist")
    if path.is_file():
        return [InputFile(label=path.name, format=_format(path.name), path=str(path))]
    if (path / "dataset_dict.json").exists():
        if not (path / split).is_dir():
            splits = json.loads((path / "dataset_dict.json").read_text()).get("splits", [])
            raise ValueError(f"{path} has no split {split!r}; splits: {', '.join(splits)}")
        path = path / split
    if (path / "state.json").exists():
        state = json.loads((path / "state.json").read_text())
        names = [entry["filename"] for entry in state["_data_files"]]
        return [InputFile(label=name, format="arrow", path=str(path / name)) for name in names]
    if (path / MANIFEST).exists():
        input_shards(path, ShardSelection(), reader="download", expects="download")  # refuses unfinished output
        found = data_files(path)
    else:
        found = sorted(
            p for p in path.rglob("*") if p.suffix in FORMATS and p.is_file() and not _hidden(p.relative_to(path))
        )
    if not found:
        raise ValueError(f"{path} holds no .parquet, .jsonl, .json or .arrow files")
    return [InputFile(label=p.relative_to(path).as_posix(), format=_format(p.name), path=str(p)) for p in found]


def sample_input() -> list[InputFile]:
    """The embedded sample (JSON lines in OpenThoughts3 row shape), shipped inside the package."""
    files = resources.sample_files()
    if not files:
        raise ValueError("the embedded sample is missing from this installation")
    return [InputFile(label=f.name, format="jsonl", path=str(f)) for f in files]


def _format(name: str) -> str:
    suffix = Path(name).suffix
    if suffix not in FORMATS:
        raise ValueError(f"{name}: unsupported file type {suffix!r} (use .parquet, .jsonl, .json or .arrow)")
    return FORMATS[suffix]


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)
