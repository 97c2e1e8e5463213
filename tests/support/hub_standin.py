"""A loopback stand-in for the Hugging Face Hub, used by tests and benchmarks.

`HubStandin` runs a threaded HTTP server on 127.0.0.1 that speaks enough of the Hub's HTTP API for the
real `huggingface_hub` and `datasets` clients to create repos, upload regular and git-LFS files, commit,
list trees and commits, download files (with byte ranges) and load datasets from it. Each commit is an
immutable snapshot of the repo tree, so every revision stays readable by branch, tag or commit sha; file
contents live in a content-addressed folder on disk.

Clients find it through the variables from `HubStandin.client_env()` (`HF_ENDPOINT`,
`HF_HUB_DISABLE_XET=1`, `HF_TOKEN`, `HF_HOME`). `datasets` and `huggingface_hub` read them at import
time, so run client code in a subprocess, or pass `endpoint=` to `HfApi` and disable Xet in-process.

Behaviour that mirrors the real Hub and matters to callers:

- a new repo starts with an "initial commit" holding a `.gitattributes` that routes data files to LFS;
- `preupload` answers "lfs" for paths matched by that `.gitattributes`, for binary samples and for large
  files, and returns the oid of the file already stored at each path, so `HfApi.create_commit` drops
  unchanged files itself and skips a commit that would change nothing (no request reaches `/commit`);
- a commit that does reach the server is always recorded, even when it leaves the tree unchanged (an
  empty-diff commit, as git and the Hub do);
- a `parentCommit` that is not the branch head is refused with 412, and binary or large files sent
  inline instead of through LFS are refused with 400.

Not supported (answered with a clear error): Xet storage, pull requests, LFS multipart transfers,
`.gitignore` filtering, repo ids without a namespace.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
import re
import shutil
import tempfile
import threading
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fnmatch import fnmatch
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode

import yaml

__all__ = ["HubCommit", "HubStandin", "RequestRecord", "StoredFile"]

# Written for the stand-in: the usual git-LFS routing for data and model files.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.arrow",
        "*.parquet",
        "*.bin",
        "*.pt",
        "*.safetensors",
        "*.npy",
        "*.npz",
        "*.gz",
        "*.zst",
        "*.zip",
        "*.tar",
        "*.png",
    )
)
DEFAULT_BRANCH = "main"
SYSTEM_AUTHOR = "system"

_COPY_CHUNK = 1 << 20
_MAX_EXPANDED_PAGE = 50  # the Hub's page size for expanded tree listings
_SHA256_RE = re.compile(r"[0-9a-f]{64}")
_XET_MESSAGE = (
    "Xet storage is not supported by the Hub stand-in: set HF_HUB_DISABLE_XET=1 in the client's "
    "environment before huggingface_hub is imported."
)


# --------------------------------------------------------------------------------------------------
# Storage model


@dataclass(frozen=True)
class StoredFile:
    """One file of a commit. `git_oid` is the git blob id: of the content, or of the LFS pointer."""

    sha256: str
    size: int
    lfs: bool
    git_oid: str

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.git_oid

    @property
    def pointer_size(self) -> int:
        return len(_lfs_pointer(self.sha256, self.size))


@dataclass(frozen=True)
class HubCommit:
    id: str
    parent: str | None
    title: str
    message: str
    author: str
    date: datetime
    files: Mapping[str, StoredFile]


@dataclass(frozen=True)
class RequestRecord:
    """One request as the stand-in saw it (never any header, so never a token)."""

    method: str
    route: str
    path: str
    status: int


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: datetime
    commits: dict[str, HubCommit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> HubCommit:
        sha = self.branches.get(revision) or self.tags.get(revision)
        if sha is None and revision in self.commits:
            sha = revision
        if sha is None:
            raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")
        return self.commits[sha]

    def history(self, commit: HubCommit) -> Iterator[HubCommit]:
        """The commit and its ancestors, newest first."""
        current: HubCommit | None = commit
        while current is not None:
            yield current
            current = self.commits[current.parent] if current.parent else None


@dataclass(frozen=True)
class _Put:
    path: str
    file: StoredFile


@dataclass(frozen=True)
class _Delete:
    path: str
    folder: bool


class HubError(Exception):
    """An HTTP error answer, shaped like the Hub's (X-Error-Code drives huggingface_hub's exceptions)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.extra = extra
        self.headers: dict[str, str] = {}

    def reply(self) -> _Reply:
        headers = {"X-Error-Message": self.message, **self.headers}
        if self.code:
            headers["X-Error-Code"] = self.code
        return _json_reply({"error": self.message, **self.extra}, status=self.status, headers=headers)


class _BlobStore:
    """Content-addressed file contents, named by sha256, written atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def size(self, sha256: str) -> int:
        return self.path(sha256).stat().st_size

    def add_bytes(self, data: bytes) -> str:
        sha256, _ = self.add_stream([data])
        return sha256

    def add_stream(self, chunks: Iterable[bytes], expected_sha256: str | None = None) -> tuple[str, int]:
        digest = hashlib.sha256()
        size = 0
        fd, tmp_name = tempfile.mkstemp(dir=self.root, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as tmp:
                for chunk in chunks:
                    digest.update(chunk)
                    size += len(chunk)
                    tmp.write(chunk)
            sha256 = digest.hexdigest()
            if expected_sha256 is not None and sha256 != expected_sha256:
                raise HubError(400, f"Uploaded content has sha256 {sha256}, expected {expected_sha256}")
            os.replace(tmp_name, self.path(sha256))
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
        return sha256, size

    def stored_file(self, sha256: str, *, lfs: bool) -> StoredFile:
        size = self.size(sha256)
        described = _lfs_pointer(sha256, size) if lfs else self.path(sha256).read_bytes()
        return StoredFile(sha256=sha256, size=size, lfs=lfs, git_oid=_git_blob_oid(described))


# --------------------------------------------------------------------------------------------------
# HTTP plumbing


@dataclass
class _Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    blob: tuple[Path, int, int] | None = None  # (file, first byte, length) to send instead of `body`


@dataclass
class _Request:
    method: str
    path: str  # raw (still percent-encoded), without the query string
    query: dict[str, list[str]]
    params: dict[str, str]  # the route's groups, percent-decoded
    handler: _Handler
    body: bytes = b""

    def arg(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[0] if values else None

    def flag(self, name: str) -> bool:
        return _truthy(self.arg(name))

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except json.JSONDecodeError as error:
            raise HubError(400, f"Request body is not valid JSON: {error}") from error

    @property
    def repo_type(self) -> str:
        group = self.params.get("type") or self.params.get("prefix")
        return {"models": "model", "datasets": "dataset", "spaces": "space"}.get(group or "", "model")

    @property
    def revision(self) -> str:
        return self.params.get("rev") or DEFAULT_BRANCH


@dataclass(frozen=True)
class _Route:
    name: str
    methods: frozenset[str]
    pattern: re.Pattern[str]
    action: str  # name of the HubStandin method that answers it
    streams_body: bool = False


_TYPE = r"(?P<type>models|datasets|spaces)"
_REPO = r"(?P<repo>[^/]+/[^/]+?)"
_REV = r"(?P<rev>refs/(?:convert|pr)/[^/]+|[^/]+)"
_PREFIX = r"(?:(?P<prefix>datasets|spaces)/)?"
_API_REPO = rf"/api/{_TYPE}/{_REPO}"


def _route(name: str, methods: str, pattern: str, action: str, streams_body: bool = False) -> _Route:
    return _Route(name, frozenset(methods.split()), re.compile(pattern), action, streams_body)


_ROUTES = (
    _route("whoami", "GET", r"/api/whoami-v2", "_whoami"),
    _route("repo_create", "POST", r"/api/repos/create", "_create_repo_route"),
    _route("repo_delete", "DELETE", r"/api/repos/delete", "_delete_repo_route"),
    _route("validate_yaml", "POST", r"/api/validate-yaml", "_validate_yaml"),
    _route("repo_info", "GET", rf"{_API_REPO}(?:/revision/{_REV})?", "_repo_info"),
    _route("preupload", "POST", rf"{_API_REPO}/preupload/{_REV}", "_preupload"),
    _route("commit", "POST", rf"{_API_REPO}/commit/{_REV}", "_commit_route"),
    _route("tree", "GET", rf"{_API_REPO}/tree/{_REV}(?:/(?P<path>.*))?", "_tree"),
    _route("paths_info", "POST", rf"{_API_REPO}/paths-info/{_REV}", "_paths_info"),
    _route("commits", "GET", rf"{_API_REPO}/commits/{_REV}", "_commits_route"),
    _route("refs", "GET", rf"{_API_REPO}/refs", "_refs"),
    _route("branch", "POST", rf"{_API_REPO}/branch/(?P<name>[^/]+)", "_create_branch"),
    _route("tag", "POST", rf"{_API_REPO}/tag/{_REV}", "_create_tag"),
    _route("xet_token", "GET POST", rf"{_API_REPO}/xet-(?:read|write)-token/.*", "_xet"),
    _route("resolve", "GET HEAD", rf"/{_PREFIX}{_REPO}/resolve/{_REV}/(?P<path>.+)", "_resolve_file"),
    _route("lfs_batch", "POST", rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/batch", "_lfs_batch"),
    _route("lfs_verify", "POST", rf"/{_PREFIX}{_REPO}\.git/info/lfs/objects/verify", "_lfs_verify"),
    _route("lfs_upload", "PUT", r"/lfs-upload/(?P<oid>[0-9a-f]{64})", "_lfs_upload", streams_body=True),
)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the clients' connection pools expect
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are dropped after this many seconds
    hub: HubStandin

    def do_GET(self) -> None:
        self.hub._handle(self)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: traffic is recorded in `HubStandin.request_log`, without headers."""

    def iter_body(self) -> Iterator[bytes]:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                yield self._read_exactly(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining:
            chunk = self._read_exactly(min(remaining, _COPY_CHUNK))
            remaining -= len(chunk)
            yield chunk

    def _read_exactly(self, size: int) -> bytes:
        data = self.rfile.read(size)
        if len(data) != size:
            raise ConnectionError("client closed the connection mid-body")
        return data

    def send_reply(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        length = reply.blob[2] if reply.blob else len(reply.body)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if self.command == "HEAD":
            return
        if reply.blob is None:
            self.wfile.write(reply.body)
            return
        path, start, remaining = reply.blob
        with path.open("rb") as source:
            source.seek(start)
            while remaining:
                chunk = source.read(min(remaining, _COPY_CHUNK))
                self.wfile.write(chunk)
                remaining -= len(chunk)


# --------------------------------------------------------------------------------------------------
# The stand-in


class HubStandin:
    """A Hub stand-in on 127.0.0.1. Use as a context manager.

    Repos and commits live in memory; file contents in a temporary folder (under $TMPDIR) that is
    deleted on close.

    Args:
        username: what `whoami` answers, and the namespace of repos created without an organization.
        token: the only bearer token accepted; when None, any non-empty token is accepted. Writes always
            need a token, reads of public repos never do.
        lfs_threshold: files at least this large go through LFS (the Hub uses 10 MiB).
        page_size: entries per page of tree and commit listings (lower it to exercise pagination).
    """

    def __init__(
        self,
        *,
        username: str = "standin-user",
        token: str | None = None,
        lfs_threshold: int = 10 * 1024 * 1024,
        page_size: int = 1000,
    ) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hub-standin-"))
        self.username = username
        self.token = token
        self.lfs_threshold = lfs_threshold
        self.page_size = page_size
        self._blobs = _BlobStore(self.root / "blobs")
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._lock = threading.RLock()
        self._commit_counter = itertools.count()
        self._stats_lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._log: list[RequestRecord] = []
        self._errors: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # ---- lifecycle -------------------------------------------------------------------------------

    def start(self) -> HubStandin:
        handler = type("HubStandinHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> HubStandin:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def client_env(self, hf_home: str | Path) -> dict[str, str]:
        """Environment overrides that point a client process at this stand-in (merge into os.environ)."""
        hf_home = Path(hf_home)
        return {
            "HF_ENDPOINT": self.endpoint,
            "HF_HUB_DISABLE_XET": "1",
            "HF_TOKEN": self.token or "hub-standin-token",
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_DATASETS_CACHE": str(hf_home / "datasets"),
            "HF_HUB_OFFLINE": "0",
            "HF_DATASETS_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }

    # ---- traffic ---------------------------------------------------------------------------------

    @property
    def request_counts(self) -> dict[str, int]:
        """Requests per "METHOD route", e.g. {"POST commit": 1, "HEAD resolve": 3}."""
        with self._stats_lock:
            return dict(self._counts)

    @property
    def request_log(self) -> list[RequestRecord]:
        with self._stats_lock:
            return list(self._log)

    @property
    def errors(self) -> list[str]:
        """Tracebacks of requests that crashed the stand-in (answered with 500)."""
        with self._stats_lock:
            return list(self._errors)

    def reset_counts(self) -> None:
        with self._stats_lock:
            self._counts.clear()
            self._log.clear()

    # ---- direct access for tests -----------------------------------------------------------------

    def create_repo(self, repo_id: str, *, repo_type: str = "dataset", private: bool = False) -> str:
        """Create a repo with its initial commit (or keep an existing one); returns the branch head sha."""
        with self._lock:
            repo = self._repos.get((repo_type, repo_id)) or self._new_repo(repo_type, repo_id, private)
            return repo.branches[DEFAULT_BRANCH]

    def seed_dataset(
        self,
        repo_id: str,
        source: str | Path | Mapping[str, bytes | Path],
        *,
        message: str = "Seed dataset",
        private: bool = False,
        path_in_repo: str = "",
    ) -> str:
        """Commit a local folder (or {path_in_repo: bytes | Path}) to a dataset repo; returns the commit sha.

        The repo is created when missing (`private` only matters then). Files are stored the way the Hub
        would store them after an upload: LFS or regular by the same rules `preupload` applies.
        """
        self.create_repo(repo_id, private=private)
        if isinstance(source, Mapping):
            items = dict(source)
        else:
            folder = Path(source)
            items = {
                path.relative_to(folder).as_posix(): path
                for path in sorted(folder.rglob("*"))
                if path.is_file() and ".git" not in path.relative_to(folder).parts
            }
        prefix = f"{path_in_repo.strip('/')}/" if path_in_repo.strip("/") else ""
        with self._lock:
            repo = self._repos[("dataset", repo_id)]
            patterns = self._lfs_patterns(repo.resolve(DEFAULT_BRANCH))
        ops = []
        for relpath, content in items.items():
            if isinstance(content, Path):
                sha256, size = self._blobs.add_stream(_file_chunks(content))
            else:
                sha256, size = self._blobs.add_bytes(content), len(content)
            with self._blobs.path(sha256).open("rb") as stored:
                sample = stored.read(512)
            path = _clean_path(prefix + relpath)
            lfs = self._wants_lfs(path, size, sample, patterns)
            ops.append(_Put(path, self._blobs.stored_file(sha256, lfs=lfs)))
        commit = self._apply_commit(repo, DEFAULT_BRANCH, ops, title=message, message="", parent=None)
        return commit.id

    def commits(self, repo_id: str, *, repo_type: str = "dataset", revision: str = DEFAULT_BRANCH) -> list[HubCommit]:
        """History of a revision, newest first."""
        with self._lock:
            repo = self._get_repo(repo_type, repo_id)
            return list(repo.history(repo.resolve(revision)))

    def list_files(self, repo_id: str, *, repo_type: str = "dataset", revision: str = DEFAULT_BRANCH) -> list[str]:
        with self._lock:
            return sorted(self._get_repo(repo_type, repo_id).resolve(revision).files)

    def read_file(
        self, repo_id: str, path: str, *, repo_type: str = "dataset", revision: str = DEFAULT_BRANCH
    ) -> bytes:
        with self._lock:
            stored = self._get_repo(repo_type, repo_id).resolve(revision).files[path]
        return self._blobs.path(stored.sha256).read_bytes()

    # ---- dispatch --------------------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        raw_path, _, query = handler.path.partition("?")
        route, match = next(
            (
                (route, match)
                for route in _ROUTES
                if handler.command in route.methods and (match := route.pattern.fullmatch(raw_path))
            ),
            (None, None),
        )
        params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None} if match else {}
        request = _Request(handler.command, raw_path, parse_qs(query, keep_blank_values=True), params, handler)
        try:
            if route is None or not route.streams_body:
                request.body = b"".join(handler.iter_body())
            if route is None:
                raise HubError(404, f"The Hub stand-in has no route for {handler.command} {raw_path}")
            reply = getattr(self, route.action)(request)
        except HubError as error:
            reply = error.reply()
        except ConnectionError:
            handler.close_connection = True
            return
        except Exception:
            with self._stats_lock:
                self._errors.append(traceback.format_exc())
            reply = _json_reply({"error": "internal error in the Hub stand-in"}, status=500)
        if route is not None and route.streams_body and reply.status >= 400:
            handler.close_connection = True  # the body may not have been read to its end
        self._record(handler.command, route.name if route else "unmatched", raw_path, reply.status)
        try:
            handler.send_reply(reply)
        except ConnectionError:
            handler.close_connection = True

    def _record(self, method: str, route: str, path: str, status: int) -> None:
        with self._stats_lock:
            self._counts[f"{method} {route}"] += 1
            self._log.append(RequestRecord(method, route, path, status))

    # ---- auth and lookup -------------------------------------------------------------------------

    def _is_authenticated(self, request: _Request) -> bool:
        scheme, _, token = request.handler.headers.get("Authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return False
        return self.token is None or hmac.compare_digest(token.encode(), self.token.encode())

    def _require_auth(self, request: _Request) -> None:
        if not self._is_authenticated(request):
            raise HubError(401, "Invalid credentials in Authorization header")

    def _get_repo(self, repo_type: str, repo_id: str) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "Repository not found", code="RepoNotFound")
        return repo

    def _repo(self, request: _Request, *, write: bool = False) -> _Repo:
        if write:
            self._require_auth(request)
        with self._lock:
            repo = self._get_repo(request.repo_type, request.params["repo"])
        if repo.private and not self._is_authenticated(request):
            raise HubError(401, "Repository not found", code="RepoNotFound")
        return repo

    def _resolve_commit(self, repo: _Repo, revision: str) -> HubCommit:
        with self._lock:
            return repo.resolve(revision)

    # ---- repos, commits and storage rules ----------------------------------------------------------

    def _new_repo(self, repo_type: str, repo_id: str, private: bool) -> _Repo:
        now = datetime.now(UTC)
        repo = _Repo(repo_type, repo_id, private, created_at=now)
        sha256 = self._blobs.add_bytes(DEFAULT_GITATTRIBUTES.encode())
        files = {".gitattributes": self._blobs.stored_file(sha256, lfs=False)}
        commit = self._make_commit(None, files, "initial commit", "", SYSTEM_AUTHOR, now)
        repo.commits[commit.id] = commit
        repo.branches[DEFAULT_BRANCH] = commit.id
        self._repos[(repo_type, repo_id)] = repo
        return repo

    def _make_commit(
        self, parent: str | None, files: dict[str, StoredFile], title: str, message: str, author: str, date: datetime
    ) -> HubCommit:
        identity = [parent, sorted((p, f.git_oid) for p, f in files.items()), title, message, _iso(date)]
        identity.append(next(self._commit_counter))  # two identical empty commits still get distinct ids
        commit_id = hashlib.sha1(json.dumps(identity).encode()).hexdigest()
        return HubCommit(commit_id, parent, title, message, author, date, MappingProxyType(files))

    def _apply_commit(
        self, repo: _Repo, branch: str, ops: list[_Put | _Delete], *, title: str, message: str, parent: str | None
    ) -> HubCommit:
        with self._lock:
            if branch not in repo.branches:
                repo.resolve(branch)  # 404 for an unknown revision
                raise HubError(400, f"Commits must target a branch, and '{branch}' is not one")
            head = repo.commits[repo.branches[branch]]
            if parent is not None and parent != head.id:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for op in ops:
                if isinstance(op, _Put):
                    files[op.path] = op.file
                    continue
                doomed = [p for p in files if p.startswith(op.path.rstrip("/") + "/")] if op.folder else [op.path]
                if not doomed or any(p not in files for p in doomed):
                    raise HubError(404, f"A file with this name doesn't exist: {op.path}", code="EntryNotFound")
                for path in doomed:
                    del files[path]
            commit = self._make_commit(head.id, files, title, message, self.username, datetime.now(UTC))
            repo.commits[commit.id] = commit
            repo.branches[branch] = commit.id
            return commit

    def _lfs_patterns(self, commit: HubCommit) -> list[str]:
        stored = commit.files.get(".gitattributes")
        if stored is None:
            return []
        lines = self._blobs.path(stored.sha256).read_text(errors="replace").splitlines()
        return [fields[0] for fields in map(str.split, lines) if len(fields) > 1 and "filter=lfs" in fields[1:]]

    def _wants_lfs(self, path: str, size: int, sample: bytes, patterns: list[str]) -> bool:
        if size == 0:
            return False
        if size >= self.lfs_threshold or b"\0" in sample:
            return True
        name = PurePosixPath(path).name
        return any(fnmatch(path, p.lstrip("/")) if "/" in p else fnmatch(name, p) for p in patterns)

    def _commit_url(self, repo: _Repo, commit_id: str) -> str:
        return f"{self.endpoint}/{_url_prefix(repo.repo_type)}{repo.repo_id}/commit/{commit_id}"

    # ---- JSON shapes -------------------------------------------------------------------------------

    def _file_json(self, path: str, stored: StoredFile) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": stored.git_oid, "size": stored.size, "path": path}
        if stored.lfs:
            entry["lfs"] = {"oid": stored.sha256, "size": stored.size, "pointerSize": stored.pointer_size}
        return entry

    def _entry_json(self, repo: _Repo, commit: HubCommit, path: str, expand: bool) -> dict[str, Any]:
        stored = commit.files.get(path)
        if stored is not None:
            entry = self._file_json(path, stored)
        else:
            entry = {"type": "directory", "oid": _tree_oid(commit.files, path), "size": 0, "path": path}
        if expand:
            last = _last_commit_touching(repo, commit, path)
            entry["lastCommit"] = {"id": last.id, "title": last.title, "date": _iso(last.date)}
        return entry

    def _card_data(self, commit: HubCommit) -> dict[str, Any] | None:
        stored = commit.files.get("README.md")
        if stored is None:
            return None
        try:
            return _front_matter(self._blobs.path(stored.sha256).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError):
            return None

    def _page(self, request: _Request, items: list[Any], page_size: int) -> _Reply:
        """One page of a listing, with a GitHub-style `Link: <...>; rel="next"` header when more remain."""
        start = int(request.arg("cursor") or 0)
        headers = {}
        if start + page_size < len(items):
            query = {**request.query, "cursor": [str(start + page_size)]}
            headers["Link"] = f'<{self.endpoint}{request.path}?{urlencode(query, doseq=True)}>; rel="next"'
        return _json_reply(items[start : start + page_size], headers=headers)

    # ---- route actions -----------------------------------------------------------------------------

    def _whoami(self, request: _Request) -> _Reply:
        self._require_auth(request)
        return _json_reply(
            {
                "type": "user",
                "id": hashlib.sha1(self.username.encode()).hexdigest()[:24],
                "name": self.username,
                "fullname": self.username,
                "isPro": False,
                "orgs": [],
                "auth": {"type": "access_token", "accessToken": {"displayName": "hub-standin", "role": "write"}},
            }
        )

    def _create_repo_route(self, request: _Request) -> _Reply:
        self._require_auth(request)
        body = request.json()
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or self.username}/{body['name']}"
        private = bool(body["private"]) if "private" in body else body.get("visibility") == "private"
        url = f"{self.endpoint}/{_url_prefix(repo_type)}{repo_id}"
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise HubError(409, f"You already created this {repo_type} repo", url=url)
            self._new_repo(repo_type, repo_id, private)
        return _json_reply({"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo_route(self, request: _Request) -> _Reply:
        self._require_auth(request)
        body = request.json()
        key = (body.get("type") or "model", f"{body.get('organization') or self.username}/{body['name']}")
        with self._lock:
            self._get_repo(*key)
            del self._repos[key]
        return _json_reply({})

    def _validate_yaml(self, request: _Request) -> _Reply:
        try:
            _front_matter(request.json().get("content", ""))
        except yaml.YAMLError as error:
            return _json_reply({"errors": [{"message": f"Invalid YAML: {error}"}], "warnings": []}, status=400)
        return _json_reply({"errors": [], "warnings": []})

    def _repo_info(self, request: _Request) -> _Reply:
        repo = self._repo(request)
        commit = self._resolve_commit(repo, request.revision)
        blobs = request.flag("blobs")
        siblings = []
        for path in sorted(commit.files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                stored = commit.files[path]
                sibling.update(size=stored.size, blobId=stored.git_oid)
                if stored.lfs:
                    sibling["lfs"] = {"size": stored.size, "sha256": stored.sha256, "pointerSize": stored.pointer_size}
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.id,
            "createdAt": _iso(repo.created_at),
            "lastModified": _iso(commit.date),
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(stored.size for stored in commit.files.values()),
        }
        card_data = self._card_data(commit)
        if card_data is not None:
            info["cardData"] = card_data
        if expand := request.query.get("expand"):
            info = {key: value for key, value in info.items() if key in expand or key in ("_id", "id")}
        return _json_reply(info)

    def _preupload(self, request: _Request) -> _Reply:
        repo = self._repo(request, write=True)
        if request.flag("create_pr"):
            raise HubError(400, "Pull requests are not supported by the Hub stand-in")
        commit = self._resolve_commit(repo, request.revision)
        patterns = self._lfs_patterns(commit)
        answers = []
        for item in request.json().get("files", []):
            path = _clean_path(item["path"])
            lfs = self._wants_lfs(path, int(item["size"]), base64.b64decode(item.get("sample", "")), patterns)
            answer = {"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False}
            existing = commit.files.get(path)
            if existing is not None:
                answer["oid"] = existing.sha256 if existing.lfs else existing.git_oid
            answers.append(answer)
        return _json_reply({"files": answers, "commitOid": commit.id})

    def _commit_route(self, request: _Request) -> _Reply:
        repo = self._repo(request, write=True)
        if request.flag("create_pr"):
            raise HubError(400, "Pull requests are not supported by the Hub stand-in")
        try:
            items = [json.loads(line) for line in request.body.splitlines() if line.strip()]
        except json.JSONDecodeError as error:
            raise HubError(400, f"Commit payload is not valid NDJSON: {error}") from error
        if not items or items[0].get("key") != "header":
            raise HubError(400, "Commit payload must start with a header line")
        header = items[0]["value"]
        ops = [self._operation(item) for item in items[1:]]
        commit = self._apply_commit(
            repo,
            request.revision,
            ops,
            title=header.get("summary") or "",
            message=header.get("description") or "",
            parent=header.get("parentCommit"),
        )
        return _json_reply(
            {"success": True, "commitOid": commit.id, "commitUrl": self._commit_url(repo, commit.id), "hookOutput": ""}
        )

    def _operation(self, item: dict[str, Any]) -> _Put | _Delete:
        key, value = item.get("key"), item.get("value") or {}
        path = _clean_path(value.get("path", ""))
        if key == "file":
            content = value.get("content", "")
            data = base64.b64decode(content) if value.get("encoding") == "base64" else content.encode()
            if len(data) >= self.lfs_threshold or b"\0" in data[:512]:
                raise HubError(
                    400, f"Your push was rejected because '{path}' is a binary or large file: upload it through LFS"
                )
            return _Put(path, self._blobs.stored_file(self._blobs.add_bytes(data), lfs=False))
        if key == "lfsFile":
            oid = value.get("oid", "")
            if not self._blobs.has(oid):
                raise HubError(400, f"LFS object {oid} for '{path}' was never uploaded")
            return _Put(path, self._blobs.stored_file(oid, lfs=True))
        if key in ("deletedFile", "deletedFolder"):
            return _Delete(path, folder=key == "deletedFolder")
        raise HubError(400, f"Unknown commit operation '{key}'")

    def _tree(self, request: _Request) -> _Reply:
        repo = self._repo(request)
        commit = self._resolve_commit(repo, request.revision)
        folder = request.params.get("path", "").strip("/")
        if folder and folder not in _folders(commit.files):
            error = HubError(404, f"{folder} is not a folder at this revision", code="EntryNotFound")
            error.headers["X-Repo-Commit"] = commit.id
            raise error
        prefix = f"{folder}/" if folder else ""
        candidates = sorted(set(commit.files) | _folders(commit.files))
        inside = [p for p in candidates if p.startswith(prefix)]
        if not request.flag("recursive"):
            inside = [p for p in inside if "/" not in p[len(prefix) :]]
        expand = request.flag("expand")
        entries = [self._entry_json(repo, commit, path, expand) for path in inside]
        return self._page(request, entries, min(self.page_size, _MAX_EXPANDED_PAGE) if expand else self.page_size)

    def _paths_info(self, request: _Request) -> _Reply:
        repo = self._repo(request)
        commit = self._resolve_commit(repo, request.revision)
        form = parse_qs(request.body.decode(), keep_blank_values=True)
        expand = _truthy((form.get("expand") or ["false"])[0])
        folders = _folders(commit.files)
        known = [p for p in (p.strip("/") for p in form.get("paths", [])) if p in commit.files or p in folders]
        return _json_reply([self._entry_json(repo, commit, path, expand) for path in known])

    def _commits_route(self, request: _Request) -> _Reply:
        repo = self._repo(request)
        with self._lock:
            history = list(repo.history(repo.resolve(request.revision)))
        items = [
            {
                "id": commit.id,
                "title": commit.title,
                "message": commit.message,
                "authors": [{"user": commit.author, "avatar": None}],
                "date": _iso(commit.date),
            }
            for commit in history
        ]
        return self._page(request, items, self.page_size)

    def _refs(self, request: _Request) -> _Reply:
        repo = self._repo(request)
        with self._lock:
            branches = dict(repo.branches)
            tags = dict(repo.tags)
        return _json_reply(
            {
                "branches": [{"name": n, "ref": f"refs/heads/{n}", "targetCommit": c} for n, c in branches.items()],
                "tags": [{"name": n, "ref": f"refs/tags/{n}", "targetCommit": c} for n, c in tags.items()],
                "converts": [],
                "pullRequests": [],
            }
        )

    def _create_branch(self, request: _Request) -> _Reply:
        repo = self._repo(request, write=True)
        name = request.params["name"]
        starting_point = request.json().get("startingPoint") or DEFAULT_BRANCH
        with self._lock:
            if name in repo.branches or name in repo.tags:
                raise HubError(409, f"Reference already exists: {name}")
            repo.branches[name] = repo.resolve(starting_point).id
        return _json_reply({})

    def _create_tag(self, request: _Request) -> _Reply:
        repo = self._repo(request, write=True)
        tag = request.json().get("tag", "")
        if not tag or "/" in tag:
            raise HubError(400, f"Invalid tag name: {tag!r}")
        with self._lock:
            if tag in repo.tags or tag in repo.branches:
                raise HubError(409, f"Reference already exists: {tag}")
            repo.tags[tag] = repo.resolve(request.revision).id
        return _json_reply({})

    def _xet(self, request: _Request) -> _Reply:
        raise HubError(501, _XET_MESSAGE)

    def _resolve_file(self, request: _Request) -> _Reply:
        repo = self._repo(request)
        commit = self._resolve_commit(repo, request.revision)
        stored = commit.files.get(request.params["path"])
        if stored is None:
            error = HubError(404, "Entry not found", code="EntryNotFound")
            error.headers["X-Repo-Commit"] = commit.id
            raise error
        headers = {
            "X-Repo-Commit": commit.id,
            "ETag": f'"{stored.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        if stored.lfs:
            headers["X-Linked-Etag"] = f'"{stored.sha256}"'
            headers["X-Linked-Size"] = str(stored.size)
        status, start, length = _byte_range(request.handler.headers.get("Range"), stored.size)
        if status == 416:
            headers["Content-Range"] = f"bytes */{stored.size}"
            return _Reply(status=416, headers=headers)
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{stored.size}"
        return _Reply(status=status, headers=headers, blob=(self._blobs.path(stored.sha256), start, length))

    def _lfs_batch(self, request: _Request) -> _Reply:
        repo = self._repo(request, write=True)
        body = request.json()
        if body.get("operation") != "upload":
            raise HubError(400, "The Hub stand-in's LFS batch endpoint only serves uploads")
        verify_url = f"{self.endpoint}/{_url_prefix(repo.repo_type)}{repo.repo_id}.git/info/lfs/objects/verify"
        objects = []
        for obj in body.get("objects", []):
            oid, size = str(obj.get("oid", "")), int(obj.get("size", 0))
            answer: dict[str, Any] = {"oid": oid, "size": size}
            if not _SHA256_RE.fullmatch(oid):
                answer["error"] = {"code": 422, "message": "oid must be a lowercase hex sha256"}
            elif not self._blobs.has(oid):
                answer["authenticated"] = True
                answer["actions"] = {
                    "upload": {"href": f"{self.endpoint}/lfs-upload/{oid}"},
                    "verify": {"href": verify_url},
                }
            objects.append(answer)
        return _json_reply(
            {"transfer": "basic", "objects": objects}, headers={"Content-Type": "application/vnd.git-lfs+json"}
        )

    def _lfs_upload(self, request: _Request) -> _Reply:
        self._blobs.add_stream(request.handler.iter_body(), expected_sha256=request.params["oid"])
        return _Reply(status=200)

    def _lfs_verify(self, request: _Request) -> _Reply:
        self._repo(request, write=True)
        body = request.json()
        oid, size = str(body.get("oid", "")), body.get("size")
        if not _SHA256_RE.fullmatch(oid) or not self._blobs.has(oid):
            raise HubError(404, f"LFS object {oid} was never uploaded")
        if size is not None and self._blobs.size(oid) != int(size):
            raise HubError(422, f"LFS object {oid} has {self._blobs.size(oid)} bytes, not {size}")
        return _json_reply({"message": "verified"})


# --------------------------------------------------------------------------------------------------
# Pure helpers


def _json_reply(data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> _Reply:
    return _Reply(
        status=status,
        body=json.dumps(data).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _url_prefix(repo_type: str) -> str:
    return {"dataset": "datasets/", "space": "spaces/"}.get(repo_type, "")


def _file_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(_COPY_CHUNK):
            yield chunk


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _clean_path(path: str) -> str:
    cleaned = path.strip().strip("/")
    parts = cleaned.split("/")
    if not cleaned or any(part in ("", ".", "..", ".git") for part in parts):
        raise HubError(400, f"Invalid path in repo: {path!r}")
    return cleaned


def _folders(files: Iterable[str]) -> set[str]:
    return {str(parent) for path in files for parent in PurePosixPath(path).parents if str(parent) != "."}


def _tree_oid(files: Mapping[str, StoredFile], folder: str) -> str:
    listing = sorted((p, f.git_oid) for p, f in files.items() if p.startswith(folder + "/"))
    return hashlib.sha1(json.dumps(listing).encode()).hexdigest()


def _last_commit_touching(repo: _Repo, commit: HubCommit, path: str) -> HubCommit:
    """The newest commit in `commit`'s history that changed the file or folder at `path`."""

    def state(snapshot: HubCommit) -> Any:
        if path in snapshot.files:
            return snapshot.files[path]
        return _tree_oid(snapshot.files, path)

    newest = commit
    for older in itertools.islice(repo.history(commit), 1, None):
        if state(older) != state(newest):
            return newest
        newest = older
    return newest


def _front_matter(text: str) -> dict[str, Any] | None:
    """The YAML metadata block of a README (None when there is none); raises yaml.YAMLError."""
    match = re.match(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*$", text, flags=re.DOTALL | re.MULTILINE)
    if match is None:
        return None
    data = yaml.safe_load(match.group(1))
    if data is not None and not isinstance(data, dict):
        raise yaml.YAMLError("the metadata block must be a mapping")
    return data


def _byte_range(header: str | None, size: int) -> tuple[int, int, int]:
    """(status, first byte, length) for an optional single-range `Range` header; 416 when unsatisfiable."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header or "")
    if match is None or match.groups() == ("", ""):
        return 200, 0, size  # no range, or a multi-range request: serve the whole file
    first, last = match.groups()
    if not first:
        suffix = int(last)
        if suffix == 0 or size == 0:
            return 416, 0, 0
        return 206, max(size - suffix, 0), min(suffix, size)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        return 416, 0, 0
    return 206, start, end - start + 1
