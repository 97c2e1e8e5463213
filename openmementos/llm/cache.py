"""The persistent response cache: every paid answer is stored once, before anyone sees it.

One SQLite file in WAL mode, one row per request key (:meth:`ChatRequest.cache_key`) holding the answer
text and its token usage. Each :meth:`ResponseCache.put` (or :meth:`~ResponseCache.put_many`) is one
committed transaction, so an answer survives a crash or ``kill -9`` of the process the moment the call
returns (``synchronous=NORMAL``: durable against process death; an OS crash may lose the last few
answers). Several processes may share one file; the busy timeout makes them take turns. Requests, API
keys and headers are never stored.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

CACHE_FILENAME = "llm_cache.sqlite"
_BUSY_TIMEOUT_MS = 5000


@dataclass(frozen=True)
class CachedAnswer:
    """A stored answer: the text, its usage, and whether it was paid at the Batch API's price."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    model: str
    batch: bool = False
    cached_prompt_tokens: int = 0
    """Prompt tokens the provider served from its prefix cache (`usage.prompt_tokens_details.cached_tokens`)."""


class ResponseCache:
    """Content-addressed store of answers, keyed by request key. Use one instance per thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=_BUSY_TIMEOUT_MS / 1000)
        self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS answers (
                key TEXT PRIMARY KEY,
                text TEXT NOT NULL,
                prompt_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL,
                finish_reason TEXT,
                model TEXT NOT NULL,
                batch INTEGER NOT NULL,
                stored_at REAL NOT NULL
            )"""
        )
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(answers)")}
        if "cached_prompt_tokens" not in columns:  # a cache written before cached tokens were read
            try:
                self._db.execute("ALTER TABLE answers ADD COLUMN cached_prompt_tokens INTEGER NOT NULL DEFAULT 0")
            except sqlite3.OperationalError as error:  # another process added it meanwhile
                if "duplicate column" not in str(error):
                    raise

    @classmethod
    def in_dir(cls, state_dir: str | Path) -> ResponseCache:
        """The cache file ``llm_cache.sqlite`` inside ``state_dir``."""
        return cls(Path(state_dir) / CACHE_FILENAME)

    def get(self, key: str) -> CachedAnswer | None:
        row = self._db.execute(
            "SELECT text, prompt_tokens, completion_tokens, finish_reason, model, batch, cached_prompt_tokens "
            "FROM answers WHERE key=?",
            (key,),
        ).fetchone()
        return None if row is None else CachedAnswer(*row[:5], batch=bool(row[5]), cached_prompt_tokens=row[6])

    def put(self, key: str, answer: CachedAnswer) -> None:
        """Store and commit ``answer``; the first answer stored under a key is the one kept."""
        self.put_many([(key, answer)])

    def put_many(self, items: Iterable[tuple[str, CachedAnswer]]) -> None:
        """Store and commit several answers in one transaction."""
        now = time.time()
        rows = [
            (
                key,
                a.text,
                a.prompt_tokens,
                a.completion_tokens,
                a.finish_reason,
                a.model,
                int(a.batch),
                now,
                a.cached_prompt_tokens,
            )
            for key, a in items
        ]
        self._db.execute("BEGIN")
        try:
            self._db.executemany("INSERT OR IGNORE INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __contains__(self, key: object) -> bool:
        return self._db.execute("SELECT 1 FROM answers WHERE key=?", (key,)).fetchone() is not None

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    def keys(self) -> Iterator[str]:
        for (key,) in self._db.execute("SELECT key FROM answers"):
            yield key

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
