"""Package faces that import their modules on first use, so light imports stay light.

A package lists what it exports and where each name lives; `from openmementos.llm import LLMEngine`
then imports `openmementos.llm.engine` only at that moment, and `openmementos --help` or
`import openmementos.validate` never pulls in the openai client, pyarrow or torch before they are used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """A module `__getattr__` that resolves `name` from `package.<exports[name]>`."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{exports[name]}"), name)

    return __getattr__
