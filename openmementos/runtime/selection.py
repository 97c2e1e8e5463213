"""`--shard I/N`: which shards of a stage's universe one run takes (N machines share a stage folder)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ShardSelection:
    """`--shard I/N`: this run processes the shards whose index is I modulo N."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> ShardSelection:
        if not text:
            return cls()
        try:
            index, count = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"--shard {text}: need 0 <= I < N")
        return cls(index, count)

    def picks(self, shard_index: int) -> bool:
        return shard_index % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


ALL_SHARDS = ShardSelection()
"""No `--shard`: every shard."""
