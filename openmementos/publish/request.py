"""The publish stage's options."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator

from openmementos.options import Cli, InDir, Request

CARD_PANEL = "Dataset card"
DEFAULT_TAGS = ("reasoning", "chain-of-thought", "mementos", "context-management", "kv-cache", "synthetic")
ROWS_PER_SHARD = 5000


class PublishRequest(Request):
    """Publish a finished `validate` folder to a Hub dataset repo or a local folder (exactly one)."""

    in_dir: InDir = Field(description="A finished `validate` output folder.")
    repo_id: Annotated[str | None, Cli(metavar="ORG/NAME")] = Field(
        None, description="Publish to this Hub dataset repo (created if missing)."
    )
    to: Annotated[Path | None, Cli(metavar="DIR")] = Field(
        None, description="Publish to this local folder instead (replaced atomically)."
    )
    private: bool = Field(False, description="Create the Hub repo as private.")
    token: Annotated[SecretStr | None, Cli(secret_env="HF_TOKEN")] = Field(
        None, description="Hub token. Default: $HF_TOKEN or your `hf auth login`. Never printed.", exclude=True
    )
    dry_run: bool = Field(False, description="Build and show what would be published, change nothing.")
    pretty_name: Annotated[str | None, Cli(panel=CARD_PANEL)] = Field(
        None, description="Dataset title on the card. Default: the repo or folder name."
    )
    license: Annotated[str | None, Cli(panel=CARD_PANEL)] = Field(
        None,
        description="License id for the card's metadata. Default: the licence of the source traces, as `download` "
        "recorded it (the Hub dataset's card, e.g. apache-2.0 for OpenThoughts3); `unknown` when it recorded none.",
    )
    source_dataset: Annotated[list[str], Cli(panel=CARD_PANEL)] = Field(
        [], description="Hub id of the source traces, repeatable. Default: what `download` read (see --lineage)."
    )
    tag: Annotated[list[str], Cli(panel=CARD_PANEL)] = Field(
        list(DEFAULT_TAGS), description="A tag of the card's metadata, repeatable (replaces the defaults)."
    )
    language: Annotated[list[str], Cli(panel=CARD_PANEL)] = Field(
        ["en"], description="A language code of the card's metadata, repeatable."
    )
    lineage: Annotated[list[Path], Cli(panel=CARD_PANEL)] = Field(
        [],
        description="Earlier stage folders (download, segment, annotate, in order), repeatable: their settings "
        "and counts go into the card's recipe. Default: the folders each manifest says its stage read.",
    )
    rows_per_shard: int = Field(ROWS_PER_SHARD, ge=1, description="Traces per parquet file of each config.")

    def secret_required(self, name: str) -> bool | None:
        """A Hub token only for publishing to the Hub (a stored `hf auth login` token serves too)."""
        return None if self.to is not None or self.dry_run else super().secret_required(name)

    @model_validator(mode="after")
    def _one_target(self) -> PublishRequest:
        if (self.repo_id is None) == (self.to is None):
            raise ValueError("give exactly one target: --repo-id ORG/NAME or --to DIR")
        if self.repo_id is not None and (self.repo_id.count("/") != 1 or not all(self.repo_id.split("/"))):
            raise ValueError(f"--repo-id must look like ORG/NAME, got {self.repo_id!r}")
        return self
