"""Files that appear whole or not at all: written under a hidden name beside the target, then renamed.

A rename within one folder is atomic on POSIX file systems, so a reader (or a rerun after a kill) sees
either the old file or the complete new one, never a torn write.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

_HOST = socket.gethostname()


class PendingFile:
    """A file being written at `tmp` that becomes `path` on `commit` (or disappears on `abort`).

    The temporary name carries the writer's host and process id, so a later run can tell a dead
    writer's debris from a file another live process (`--shard` runs share a folder) is writing.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.{_HOST}.{os.getpid()}.tmp")

    def commit(self) -> None:
        try:
            self.tmp.replace(self.path)
        except BaseException:  # e.g. a folder is in the way: leave no temporary file behind
            self.abort()
            raise

    def abort(self) -> None:
        self.tmp.unlink(missing_ok=True)


def atomic_write(path: Path, data: str | bytes) -> None:
    """Write `data` (text as UTF-8) to `path` atomically."""
    pending = PendingFile(path)
    try:
        pending.tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    except BaseException:
        pending.abort()
        raise
    pending.commit()


def leftovers(path: Path) -> list[Path]:
    """Temporary files of `path` that a killed writer left behind (any process's)."""
    return list(path.parent.glob(f".{path.name}.*.tmp"))


def dead_leftovers(path: Path) -> list[Path]:
    """Those `leftovers` of `path` whose writer ran on this host and is no longer running."""
    dead = []
    for tmp in leftovers(path):
        host, _, pid = tmp.name[len(path.name) + 2 : -len(".tmp")].rpartition(".")
        if host == _HOST and pid.isdigit() and not _running(int(pid)):
            dead.append(tmp)
    return dead


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
