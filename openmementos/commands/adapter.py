"""Typer commands built from request models, so an option is declared once: in its request's field.

A command module writes `def segment(request: SegmentRequest) -> None` (docstring = the command's help,
body = run the library, print the result); `command(segment)` gives Typer a function whose parameters
are the request's fields (types, defaults, bounds, help, panels) and which validates what was typed into
the request before calling it. Errors a user can act on end the command with one `error: ...` line and
exit status 1 (an LLM failure mid-run adds that a rerun resumes); Ctrl-C ends it with the resume hint
and status 130.

Help is rendered with rich markup (`help_text`): prose paragraphs reflow to the terminal, examples keep
their lines, and every word shows, `<think>` and `train-*.parquet` included. Flags show no value
placeholder (`HelpCommand`).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin, get_type_hints

import typer
from pydantic import SecretStr, ValidationError
from pydantic.fields import FieldInfo
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from openmementos.commands import exit_interrupted
from openmementos.options import Request, cli_of

_PLAIN = (str, int, float, bool, Path)


RESUME_HINT = "Every answer received so far is cached; rerun the same command to resume."


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(1)


def help_text(doc: str | None) -> str:
    """A docstring as rich help shows it whole: each prose paragraph on one line (rich wraps it to the
    terminal), indented paragraphs (examples) line by line, and markup characters escaped."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    kept = [p if p[:1].isspace() or "\n " in p else " ".join(p.split("\n")) for p in paragraphs]
    return escape("\n\n".join(kept))


class _PlainFlags:
    """Typer shows a `<bool>` type next to every flag, though a flag takes no value: show none."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_bool_flag", False) and param.metavar is None:
                param.metavar = ""
        return params


class HelpCommand(_PlainFlags, TyperCommand):
    """The class of every `openmementos` command."""


class HelpGroup(_PlainFlags, TyperGroup):
    """The class of the `openmementos` app."""


def flag_of(name: str, info: FieldInfo) -> str:
    """The command-line name of a request field (`--lambda`, `--min-block-tokens`, or `IN_DIR`)."""
    cli = cli_of(info)
    if cli.argument:
        return name.upper()
    return cli.flag or "--" + (info.alias or name).replace("_", "-")


def _optional_inner(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [arg for arg in get_args(annotation) if arg is not type(None)]
        return args[0] if len(args) == 1 else str
    return annotation


def cli_type(annotation: Any) -> Any:
    """The type Typer parses a field as: plain types, enums, literals and lists of them; text otherwise."""
    inner = _optional_inner(annotation)
    if get_origin(inner) is list:
        return list[cli_type(get_args(inner)[0])]
    if inner in _PLAIN or get_origin(inner) is Literal or (isinstance(inner, type) and issubclass(inner, Enum)):
        return inner
    return str  # parsed by the field's own validator (e.g. `--shard I/N`, secrets)


def _bounds(info: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for item in info.metadata:
        for attribute, key in (("ge", "min"), ("le", "max")):
            if (value := getattr(item, attribute, None)) is not None:
                bounds[key] = value
    return bounds


def _repeated_metavar(typ: Any) -> str | None:
    """What one value of a repeatable option is (PATH, TEXT), instead of rich's `<list[str]>`."""
    if get_origin(typ) is not list:
        return None
    (item,) = get_args(typ)
    return "PATH" if item is Path else "TEXT"


def parameter(name: str, info: FieldInfo) -> inspect.Parameter:
    """The Typer parameter of one request field."""
    cli, typ = cli_of(info), cli_type(info.annotation)
    required = info.is_required()
    plain_default = info.default is None or isinstance(info.default, (*_PLAIN, Enum))
    default = ... if required else (info.default if plain_default else None)
    shown = not required and plain_default and info.default is not None and info.annotation is not SecretStr
    metavar = cli.metavar or (flag_of(name, info) if cli.argument else None) or _repeated_metavar(typ)
    common: dict[str, Any] = {"help": escape(info.description or ""), "metavar": metavar, "show_default": shown}
    if cli.argument:
        declaration: Any = typer.Argument(**common)
    else:
        flag = flag_of(name, info)
        if typ is bool and "/" not in flag:
            flag = flag if info.default is False else f"{flag}/--no-{flag.removeprefix('--')}"
        declaration = typer.Option(flag, rich_help_panel=cli.panel, **_bounds(info), **common)
    annotation = typ if required else typ | None
    return inspect.Parameter(
        name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[annotation, declaration]
    )


def _bad_parameter(error: ValidationError, request_type: type[Request]) -> typer.BadParameter:
    first = error.errors()[0]
    name = str(first["loc"][0]) if first["loc"] else None
    info = request_type.model_fields.get(name) if name else None
    hint = flag_of(name, info) if name and info else None
    return typer.BadParameter(first["msg"].removeprefix("Value error, "), param_hint=hint)


def ordered_fields(request_type: type[Request]) -> list[str]:
    """A request's fields, the most specific class's first: a stage's own options before shared ones."""
    names: list[str] = []
    for cls in request_type.__mro__:
        names += [n for n in vars(cls).get("__annotations__", {}) if n in request_type.model_fields and n not in names]
    return names


def command(function: Callable[[Any], None]) -> Callable[..., None]:
    """A Typer command whose options are the fields of `function`'s request type."""
    request_type: type[Request] = get_type_hints(function)["request"]

    @functools.wraps(function)
    def typer_command(**values: Any) -> None:
        given = {name: value for name, value in values.items() if value is not None and value != []}
        try:
            request = request_type.model_validate(given)
        except ValidationError as error:
            raise _bad_parameter(error, request_type) from None
        from openmementos.llm.errors import ConfigurationError, LLMError
        from openmementos.runtime.manifest import StageError

        try:
            function(request)
        except KeyboardInterrupt:
            exit_interrupted()
        except (ConfigurationError, StageError, ValueError, OSError) as error:
            _fail(str(error))
        except LLMError as error:  # the run started: what it paid for is kept
            _fail(f"{error}\n{RESUME_HINT}")

    parameters = [parameter(name, request_type.model_fields[name]) for name in ordered_fields(request_type)]
    # Typer must read these parameters, not `function`'s (`wraps` copied its name, help and annotations).
    typer_command.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    typer_command.__doc__ = help_text(function.__doc__)
    typer_command.__annotations__ = {p.name: p.annotation for p in parameters}
    del typer_command.__wrapped__
    return typer_command
