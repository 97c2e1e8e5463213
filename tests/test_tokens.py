import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import tiktoken_ext.openai_public as registry

from openmementos.tokens import count_tokens

SCRIPT = """
import json, sys
from openmementos.tokens import get_encoding
out = {name: get_encoding(name).encode("hello world, MEMENTO blocks!") for name in ("cl100k_base", "o200k_base")}
print(json.dumps(out))
"""


def test_offline_tiktoken_from_an_empty_cache(tmp_path: Path):
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path),
        # Any download attempt fails fast: proxies pointing at a closed loopback port.
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    ids = json.loads(result.stdout)
    assert ids["cl100k_base"][:2] == [15339, 1917]  # "hello", " world" in cl100k_base
    # The seeded files are byte-identical to the ones tiktoken itself would download.
    source = Path(registry.__file__).read_text()
    for path in tmp_path.iterdir():
        assert hashlib.sha256(path.read_bytes()).hexdigest() in source
    assert len(list(tmp_path.iterdir())) == 2


def test_existing_cache_file_is_not_overwritten(tmp_path: Path, monkeypatch):
    from openmementos.tokens import seed_tiktoken_cache

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    target = seed_tiktoken_cache("cl100k_base")
    target.write_bytes(b"user's own file")
    assert seed_tiktoken_cache("cl100k_base") == target
    assert target.read_bytes() == b"user's own file"


def test_empty_cache_dir_turns_seeding_off(tmp_path: Path, monkeypatch):
    from openmementos.tokens import seed_tiktoken_cache

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")  # tiktoken's switch for "no cache"
    monkeypatch.chdir(tmp_path)
    assert seed_tiktoken_cache("cl100k_base") is None
    assert list(tmp_path.iterdir()) == []  # nothing written into the working directory


def test_count_tokens_batches_and_counts_special_strings_as_text():
    counts = count_tokens(["hello world", "", "<|endoftext|>"])
    assert counts[:2] == [2, 0]
    assert counts[2] > 1
