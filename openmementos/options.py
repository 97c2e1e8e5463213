"""Stage requests: one Pydantic model per stage is the single source of every option.

A request field's name, type, default, bounds and `description` are the option's; the CLI builds its
command from the model (`openmementos.commands.adapter`), a pipeline file's keys are the same names
(`openmementos.pipeline`), and library users construct the model directly:

    from openmementos.segment import SegmentRequest, run_segment
    result = run_segment(SegmentRequest(in_dir=Path("out/download"), out_dir=Path("out/segment")))

`Cli` metadata (in `Annotated`) only says how a field looks on the command line: positional, its flag
when that is not `--<name-with-dashes>`, a help panel, a metavar, or a secret's environment variable.
Secrets are `SecretStr`: never printed, never recorded, and refused in pipeline files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer
from pydantic.fields import FieldInfo

from openmementos.runtime.selection import ShardSelection


@dataclass(frozen=True)
class Cli:
    """How a request field appears on the command line."""

    argument: bool = False
    """Positional (IN_DIR, OUT_DIR) instead of an option."""
    flag: str | None = None
    """The option's name when it is not `--<field-name-with-dashes>`, e.g. `--lambda`."""
    panel: str | None = None
    """The `--help` section it is listed under."""
    metavar: str | None = None
    secret_env: str | None = None
    """A secret's environment variable: the fallback for the value, and what pipeline files must use."""


def cli_of(info: FieldInfo) -> Cli:
    return next((item for item in info.metadata if isinstance(item, Cli)), Cli())


class Request(BaseModel):
    """Base of every request: unknown options are errors, fields are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, arbitrary_types_allowed=True)

    @classmethod
    def key_of(cls, name: str) -> str:
        """The pipeline-file key of a field (its alias, else its name)."""
        return cls.model_fields[name].alias or name

    def secret_required(self, name: str) -> bool | None:
        """Whether this request must have the secret field `name` (True), may use it (False), or will not
        use it at all (None). Every secret is required unless a request says otherwise."""
        return True


def _shard(value: Any) -> Any:
    return ShardSelection.parse(value) if isinstance(value, str) else value


Shard = Annotated[
    ShardSelection,
    BeforeValidator(_shard),
    PlainSerializer(str, return_type=str),
    Cli(metavar="I/N"),
]
"""`--shard I/N`, given as text, held as a `ShardSelection`."""


class ExecutorOptions(Request):
    """Where the shards of a stage run (see `openmementos.runtime.executors`)."""

    executor: Annotated[str, Cli(panel="Execution")] = Field(
        "local",
        pattern="^(local|ray)$",
        description="local: this machine (--workers processes); ray: one Ray task per shard on a cluster.",
    )
    ray_address: Annotated[str | None, Cli(panel="Execution", metavar="ADDR")] = Field(
        None, description="Ray cluster to join (e.g. auto, ray://head:10001). Default: start a local one."
    )
    workers: Annotated[int | None, Cli(panel="Execution")] = Field(
        None, ge=1, description="Shards processed at once (processes, or Ray tasks). Default: see the stage."
    )
    shard: Annotated[Shard, Cli(panel="Execution", metavar="I/N")] = Field(
        ShardSelection(), description="Process only the input shards whose index is I modulo N (N machines)."
    )

    def make_executor(self, default_workers: int = 1) -> Any:
        from openmementos.runtime.executors import make_executor

        if self.executor != "ray" and self.ray_address is not None:
            raise ValueError("--ray-address needs --executor ray")
        workers = self.workers if self.workers is not None or self.executor == "ray" else default_workers
        return make_executor(self.executor, workers, self.ray_address)  # type: ignore[arg-type]


InDir = Annotated[Path, Cli(argument=True)]
OutDir = Annotated[Path, Cli(argument=True)]
