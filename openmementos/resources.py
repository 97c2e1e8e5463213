"""Files that ship with the package: prompt templates (`prompts/`), card templates (`cards/`), the sample.

`prompts/` and `cards/` live at the top of the repository so they are easy to find and edit; the
symlinks `openmementos/prompts` and `openmementos/cards` put them inside the package (and its wheel).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from importlib.resources.abc import Traversable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from openmementos.schema import SourceTrace


def _folder(name: str) -> Traversable:
    return resources.files(f"openmementos.{name}")


def read_prompt(name: str) -> str:
    """The text of `prompts/<name>` (e.g. "compress.md")."""
    return (_folder("prompts") / name).read_text(encoding="utf-8")


def read_card_template(name: str) -> str:
    """The text of `cards/<name>` (e.g. "dataset_card.md")."""
    return (_folder("cards") / name).read_text(encoding="utf-8")


def sample_files() -> list[Traversable]:
    """The embedded sample of reasoning traces (OpenThoughts3 row shape, JSON lines)."""
    folder = resources.files("openmementos") / "data" / "sample"
    return sorted((f for f in folder.iterdir() if f.name.endswith(".jsonl")), key=lambda f: f.name)


def sample_traces() -> list[SourceTrace]:
    """The embedded sample as SourceTraces, in file order.

    Rows `SourceTrace.from_openthoughts` rejects are skipped; download's content filters (CJK, empty
    answer, too few sentences) are not applied, so this is not exactly what `download --sample` writes.
    """
    from openmementos.schema import SourceTrace, TraceRejected  # pyarrow and pydantic: only when asked

    traces = []
    for file in sample_files():
        for line in file.read_text(encoding="utf-8").splitlines():
            try:
                traces.append(SourceTrace.from_openthoughts(json.loads(line)))
            except TraceRejected:
                continue
    return traces


def content_hash(*texts: str) -> str:
    """A short version id for prompt texts, recorded in every row they produced."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:12]
