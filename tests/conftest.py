"""Shared fixtures: the demo pipeline, run once per test session."""

from __future__ import annotations

import os

# No test touches a real Hub: huggingface_hub and datasets read these at import, so set them before
# any test module imports them. Tests that publish to the loopback stand-in override them explicitly
# (a subprocess with `HubStandin.client_env`, or patched constants in-process).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # the Ray executor tests start a local cluster

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from openmementos.cli import app

ROOT = Path(__file__).resolve().parents[1]
WIDE = {"COLUMNS": "250"}
"""A wide terminal, so rich does not wrap the lines tests look for."""


@dataclass(frozen=True)
class DemoRun:
    """`openmementos run pipelines/demo.yaml` with its folders moved under a temporary workdir.

    It runs the way an interrupted user would: first `--until segment`, then the whole pipeline, which
    resumes after segment. Both CLI results are kept, with the stage folders present after the first.
    """

    pipeline: Path
    workdir: Path
    partial: Result
    folders_after_partial: frozenset[str]
    full: Result

    @property
    def published(self) -> Path:
        return self.workdir / "published"

    @property
    def report(self) -> Path:
        return self.workdir / "report.json"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """The demo pipeline run once per session (tests read its output; none may modify it)."""
    workdir = tmp_path_factory.mktemp("demo")
    spec = yaml.safe_load((ROOT / "pipelines" / "demo.yaml").read_text())
    spec["workdir"] = str(workdir)
    spec["stages"]["validate"]["report"] = str(workdir / "report.json")
    spec["stages"]["publish"]["to"] = str(workdir / "published")
    pipeline = workdir.parent / f"{workdir.name}.yaml"
    pipeline.write_text(yaml.safe_dump(spec, sort_keys=False))
    runner = CliRunner()
    partial = runner.invoke(app, ["run", str(pipeline), "--until", "segment"], env=WIDE)
    folders = frozenset(p.name for p in workdir.iterdir() if p.is_dir())
    full = runner.invoke(app, ["run", str(pipeline)], env=WIDE)
    return DemoRun(pipeline, workdir, partial, folders, full)


@pytest.fixture(scope="session")
def demo_dataset(demo_run: DemoRun) -> Path:
    """The published demo dataset folder (`datasets.load_dataset(folder, "default")` reads it)."""
    if demo_run.full.exit_code != 0:
        pytest.fail(f"the demo pipeline failed:\n{demo_run.full.output}")
    return demo_run.published
