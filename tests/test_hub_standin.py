"""The loopback Hub stand-in, driven by the real huggingface_hub and datasets clients."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.hub_standin import HubStandin

huggingface_hub = pytest.importorskip("huggingface_hub")
from huggingface_hub import CommitOperationAdd, HfApi, HfFileSystem  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

TOKEN = "test-token"
CARD = textwrap.dedent(
    """\
    ---
    configs:
    - config_name: default
      data_files:
      - split: train
        path: data/train-*
    - config_name: full
      data_files:
      - split: train
        path: full/train-*
    ---
    # Two-config test dataset
    """
)


@pytest.fixture
def hub():
    with HubStandin(token=TOKEN) as standin:
        yield standin
        assert standin.errors == []


@pytest.fixture
def in_process_client(monkeypatch):
    """huggingface_hub read HF_HUB_DISABLE_XET / HF_HUB_OFFLINE at import: set what they would have given."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def api(hub, in_process_client):
    return HfApi(endpoint=hub.endpoint, token=TOKEN)


@pytest.fixture
def dataset_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "dataset"
    (folder / "data").mkdir(parents=True)
    (folder / "full").mkdir()
    for shard in range(2):
        rows = range(shard * 3, shard * 3 + 3)
        pq.write_table(
            pa.table({"problem": [f"p{i}" for i in rows], "difficulty": list(rows)}),
            folder / f"data/train-0000{shard}-of-00002.parquet",
        )
    pq.write_table(
        pa.table({"problem": ["p0", "p1"], "sentences": [["a", "b"], ["c"]]}),
        folder / "full/train-00000-of-00001.parquet",
    )
    (folder / "README.md").write_text(CARD)
    return folder


def _post(hub: HubStandin, path: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict]:
    request = urllib.request.Request(f"{hub.endpoint}{path}", data=body, method="POST")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _get(url: str, range_header: str) -> tuple[int, str | None, bytes]:
    request = urllib.request.Request(url, headers={"Range": range_header})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, response.headers.get("Content-Range"), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Content-Range"), b""


def _ndjson(*items: dict) -> bytes:
    return b"".join(json.dumps(item).encode() + b"\n" for item in items)


def test_upload_folder_then_download_and_identical_reupload_changes_nothing(hub, api, dataset_folder, tmp_path):
    api.create_repo("org/mementos", repo_type="dataset")
    api.create_repo("org/mementos", repo_type="dataset", exist_ok=True)  # 409 absorbed by exist_ok
    first = api.upload_folder(folder_path=dataset_folder, repo_id="org/mementos", repo_type="dataset")

    local_files = sorted(p.relative_to(dataset_folder).as_posix() for p in dataset_folder.rglob("*") if p.is_file())
    assert api.list_repo_files("org/mementos", repo_type="dataset") == sorted([".gitattributes", *local_files])
    assert hub.request_counts["PUT lfs_upload"] == 3  # the parquet shards went through git-LFS
    tree = {f.path: f for f in api.list_repo_tree("org/mementos", repo_type="dataset", recursive=True)}
    assert tree["data/train-00000-of-00002.parquet"].lfs is not None
    assert tree["README.md"].lfs is None

    shard = api.hf_hub_download(
        "org/mementos", "data/train-00001-of-00002.parquet", repo_type="dataset", cache_dir=tmp_path / "cache"
    )
    assert Path(shard).read_bytes() == (dataset_folder / "data/train-00001-of-00002.parquet").read_bytes()
    snapshot = Path(api.snapshot_download("org/mementos", repo_type="dataset", cache_dir=tmp_path / "cache"))
    assert snapshot.name == first.oid
    for relpath in local_files:
        assert (snapshot / relpath).read_bytes() == (dataset_folder / relpath).read_bytes()

    second = api.upload_folder(folder_path=dataset_folder, repo_id="org/mementos", repo_type="dataset")
    assert second.oid == first.oid
    assert hub.request_counts["POST commit"] == 1  # the client saw identical oids and skipped the commit
    assert hub.request_counts["PUT lfs_upload"] == 3
    assert [c.title for c in api.list_repo_commits("org/mementos", repo_type="dataset")] == [
        "Upload folder using huggingface_hub",
        "initial commit",
    ]
    assert TOKEN not in repr(hub.request_log)


def test_commit_that_changes_nothing_is_recorded_as_an_empty_diff(hub, api):
    head = hub.seed_dataset("org/ds", {"notes.txt": b"same"})
    unchanged = api.create_commit(
        "org/ds", [CommitOperationAdd("notes.txt", b"same")], commit_message="again", repo_type="dataset"
    )
    assert unchanged.oid == head
    assert "POST commit" not in hub.request_counts  # huggingface_hub skips it, as against the real Hub

    status, answer = _post(
        hub, "/api/datasets/org/ds/commit/main", _ndjson({"key": "header", "value": {"summary": "noop"}})
    )
    assert status == 200
    newest, previous = hub.commits("org/ds")[:2]
    assert (newest.id, newest.title, newest.parent) == (answer["commitOid"], "noop", head)
    assert newest.files == previous.files


def test_every_revision_stays_readable_by_sha_tag_and_branch(hub, api, tmp_path):
    first = hub.seed_dataset("org/ds", {"a.txt": b"v1", "old/x.txt": b"gone soon"})
    api.create_tag("org/ds", tag="v1", repo_type="dataset")
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="a.txt", repo_id="org/ds", repo_type="dataset")
    api.delete_folder("old", repo_id="org/ds", repo_type="dataset")
    api.create_branch("org/ds", branch="legacy", revision=first, repo_type="dataset")

    def read(revision: str) -> bytes:
        path = api.hf_hub_download("org/ds", "a.txt", repo_type="dataset", revision=revision, cache_dir=tmp_path)
        return Path(path).read_bytes()

    assert (read(first), read("v1"), read("legacy"), read("main")) == (b"v1", b"v1", b"v1", b"v2")
    assert api.list_repo_files("org/ds", repo_type="dataset") == [".gitattributes", "a.txt"]
    assert "old/x.txt" in api.list_repo_files("org/ds", repo_type="dataset", revision=first)
    refs = api.list_repo_refs("org/ds", repo_type="dataset")
    assert {b.name for b in refs.branches} == {"main", "legacy"}
    assert [(t.name, t.target_commit) for t in refs.tags] == [("v1", first)]
    assert api.dataset_info("org/ds", revision="v1").sha == first


def test_seeded_folder_lists_with_pagination_and_paths_info(tmp_path, in_process_client):
    folder = tmp_path / "seed"
    for relpath in ("README.md", "data/a.parquet", "data/b.parquet", "data/nested/c.jsonl", "notes.txt"):
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        (folder / relpath).write_bytes(relpath.encode())
    with HubStandin(page_size=2) as hub:
        api = HfApi(endpoint=hub.endpoint, token=False)
        commit = hub.seed_dataset("org/seeded", folder, message="seed it")
        entries = list(api.list_repo_tree("org/seeded", repo_type="dataset", recursive=True))
        folders = ["data", "data/nested"]
        files = [".gitattributes", "README.md", "data/a.parquet", "data/b.parquet", "data/nested/c.jsonl", "notes.txt"]
        assert sorted(e.path for e in entries) == sorted(folders + files)
        assert hub.request_counts["GET tree"] == 4  # 8 entries, 2 per page, followed through Link headers
        top = list(api.list_repo_tree("org/seeded", "data", repo_type="dataset", expand=True))
        assert [(e.path, e.last_commit.oid) for e in top] == [
            ("data/a.parquet", commit),
            ("data/b.parquet", commit),
            ("data/nested", commit),
        ]
        infos = api.get_paths_info("org/seeded", ["data/a.parquet", "data", "missing"], repo_type="dataset")
        assert [(type(i).__name__, i.path) for i in infos] == [("RepoFile", "data/a.parquet"), ("RepoFolder", "data")]
        assert infos[0].lfs is not None and infos[0].lfs.size == len(b"data/a.parquet")
        assert hub.read_file("org/seeded", "notes.txt") == b"notes.txt"


def test_errors_look_like_the_hubs(hub, api, tmp_path):
    head = hub.seed_dataset("org/ds", {"a.txt": b"1"})
    api.upload_file(path_or_fileobj=b"2", path_in_repo="a.txt", repo_id="org/ds", repo_type="dataset")
    with pytest.raises(HfHubHTTPError) as stale:
        api.create_commit(
            "org/ds", [CommitOperationAdd("a.txt", b"3")], commit_message="x", repo_type="dataset", parent_commit=head
        )
    assert stale.value.response.status_code == 412
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("org/missing")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files("org/ds", repo_type="dataset", revision="no-such-branch")
    with pytest.raises(RemoteEntryNotFoundError):
        api.hf_hub_download("org/ds", "missing.txt", repo_type="dataset", cache_dir=tmp_path)
    with pytest.raises(HfHubHTTPError) as unauthorized:
        HfApi(endpoint=hub.endpoint, token="wrong-token").create_repo("org/other", repo_type="dataset")
    assert unauthorized.value.response.status_code == 401

    api.create_repo("org/private", repo_type="dataset", private=True)
    assert api.dataset_info("org/private").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token=False).dataset_info("org/private")

    binary = {
        "key": "file",
        "value": {"path": "x.bin", "encoding": "base64", "content": base64.b64encode(b"\0\1").decode()},
    }
    status, answer = _post(
        hub, "/api/datasets/org/ds/commit/main", _ndjson({"key": "header", "value": {"summary": "b"}}, binary)
    )
    assert status == 400 and "LFS" in answer["error"]
    status, _ = _post(
        hub, "/api/datasets/org/ds/commit/main", _ndjson({"key": "header", "value": {"summary": "c"}}), None
    )
    assert status == 401
    assert len(hub.commits("org/ds")) == 3  # none of the refused commits landed


def test_byte_ranges(hub, api):
    content = bytes(range(200))
    head = hub.seed_dataset("org/ds", {"blob.bin": content})
    url = f"{hub.endpoint}/datasets/org/ds/resolve/{head}/blob.bin"
    assert _get(url, "bytes=10-19") == (206, "bytes 10-19/200", content[10:20])
    assert _get(url, "bytes=-5") == (206, "bytes 195-199/200", content[-5:])
    assert _get(url, "bytes=500-") == (416, "bytes */200", b"")
    fs = HfFileSystem(endpoint=hub.endpoint, token=TOKEN)
    with fs.open("datasets/org/ds/blob.bin", block_size=16) as handle:
        handle.seek(100)
        assert handle.read(8) == content[100:108]


CLIENT_SCRIPT = """
import json, sys
import datasets
from huggingface_hub import HfApi

repo = sys.argv[1]
report = {}
for config in ("default", "full"):
    loaded = datasets.load_dataset(repo, config, split="train")
    report[config] = {"rows": loaded.num_rows, "columns": loaded.column_names, "first": loaded[0]}
streamed = datasets.load_dataset(repo, "default", split="train", streaming=True)
report["streamed"] = [row["problem"] for row in streamed]

table = datasets.Dataset.from_dict({"text": ["x", "y"], "label": [0, 1]})
table.push_to_hub("org/pushed")
table.push_to_hub("org/pushed")
report["pushed"] = datasets.load_dataset("org/pushed", split="train").to_dict()
report["pushed_commits"] = len(HfApi().list_repo_commits("org/pushed", repo_type="dataset"))
print(json.dumps(report))
"""


def test_datasets_reads_configs_streams_and_pushes_through_the_standin(hub, dataset_folder, tmp_path):
    hub.seed_dataset("org/mementos", dataset_folder)
    env = {**os.environ, **hub.client_env(tmp_path / "hf"), "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    result = subprocess.run(
        [sys.executable, "-c", CLIENT_SCRIPT, "org/mementos"], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["default"] == {
        "rows": 6,
        "columns": ["problem", "difficulty"],
        "first": {"problem": "p0", "difficulty": 0},
    }
    assert report["full"]["rows"] == 2 and report["full"]["first"] == {"problem": "p0", "sentences": ["a", "b"]}
    assert report["streamed"] == [f"p{i}" for i in range(6)]
    assert report["pushed"] == {"text": ["x", "y"], "label": [0, 1]}
    assert report["pushed_commits"] == 2  # initial commit + one push: the identical second push made none
    assert "GET unmatched" not in hub.request_counts
