"""Switching a target to a new build in one step: a folder by rename, a Hub repo by one commit.

A folder is swapped in by rename; a Hub repo gets one commit with every added, changed and removed file
(large files go through LFS before the commit exists), so readers never see half a dataset. Unchanged
files are not uploaded again, and when nothing changed no commit is made.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from openmementos.publish.build import MANAGED, Build, PublishError, build
from openmementos.publish.request import PublishRequest


@dataclass(frozen=True)
class PublishResult:
    target: str
    changed: bool
    build: Build
    commit: str | None = None
    """The Hub commit the repo is at after publishing (new or unchanged)."""
    removed: list[str] = field(default_factory=list)
    """Files of an earlier publish that this one removed (e.g. shards no longer needed)."""


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


def publish_to_folder(request: PublishRequest, target: Path) -> PublishResult:
    """Build next to `target`, then swap it in by rename; an identical earlier publish is left untouched."""
    if target.exists():
        _check_replaceable(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.publishing")
    shutil.rmtree(staging, ignore_errors=True)  # a build that a crash left behind
    staging.mkdir()
    try:
        built = build(request, staging, str(target))
        if target.exists() and _same_files(staging, target, built.files):
            return PublishResult(str(target), changed=False, build=_moved(built, target))
        if request.dry_run:
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


def publish_to_hub(request: PublishRequest, repo_id: str) -> PublishResult:
    """Build in a temporary folder, then make one commit holding every change (none if nothing changed)."""
    token = request.token.get_secret_value() if request.token else None
    with tempfile.TemporaryDirectory(prefix="openmementos-publish-") as tmp:
        built = build(request, Path(tmp), repo_id)
        if request.dry_run:
            return PublishResult(repo_id, changed=True, build=built)
        try:
            return _commit(built, repo_id, request.private, token)
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


def run_publish(request: PublishRequest) -> PublishResult:
    """Publish the validated traces of `request.in_dir` to its Hub repo or local folder."""
    if request.repo_id is not None:
        return publish_to_hub(request, request.repo_id)
    assert request.to is not None  # the request checks that exactly one target is given
    return publish_to_folder(request, request.to)
