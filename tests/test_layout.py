"""The house keeps its shape: checking and publishing never load the LLM client stack, and the wheel holds
the product only (test support stays in tests/)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

IMPORTS = """
import json, sys
import openmementos.validate.stage, openmementos.validate.report
import openmementos.publish.targets, openmementos.publish.card
import openmementos.stats
import openmementos.cli
from openmementos.validate import run_validate
from openmementos.publish import run_publish
print(json.dumps([name for name in ("openai", "httpx", "torch") if name in sys.modules]))
"""


def test_validate_publish_card_stats_and_the_cli_never_import_openai_or_httpx() -> None:
    result = subprocess.run([sys.executable, "-c", IMPORTS], capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == []


def test_the_wheel_holds_the_product_and_no_test_support(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy: setuptools writes build/ next to the sources
    shutil.copytree(ROOT, source, symlinks=True, ignore=shutil.ignore_patterns(".*", "out", "build", "__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path)]
    subprocess.run([*build, str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("openmementos-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert not [name for name in names if "standin" in name or "tiny_model" in name or name.startswith("tests/")]
    assert "openmementos/testing/__init__.py" not in names
    for shipped in ("openmementos/prompts/compress.md", "openmementos/cards/dataset_card.md", "openmementos/cli.py"):
        assert shipped in names
    assert any(name.startswith("openmementos/data/sample/") for name in names)
