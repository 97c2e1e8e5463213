"""`openmementos generate`: answer problems with a memento model, evicting finished blocks."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from openmementos.infer.request import GenerateRequest

if TYPE_CHECKING:
    from openmementos.infer.result import GenerationResult


def generate(request: GenerateRequest) -> None:
    """Generate with block eviction and report the KV-cache savings per problem.

    When a memento's <|summary_end|> is produced, the KV entries of the block it summarises are
    dropped; later tokens see the prompt, the mementos and the current block. Each result line holds
    the text, tokens generated, blocks evicted and the peak KV tokens with and without eviction.

    Example: openmementos generate --model ckpt/s2 --prompt "Find all real x with x^2 = 4." --backend hf
    """
    from openmementos.infer.generate import run_generate

    results = run_generate(request)
    lines = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in results)
    if request.out:
        request.out.parent.mkdir(parents=True, exist_ok=True)
        request.out.write_text(lines)
    else:
        typer.echo(lines, nl=False)
    _print_summary(results)


def _print_summary(results: list[GenerationResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="KV cache per problem")
    for column in ("#", "generated", "finish", "blocks evicted", "peak KV", "peak KV no eviction", "ratio"):
        table.add_column(column, justify="right")
    for index, r in enumerate(results):
        table.add_row(
            str(index),
            str(r.tokens_generated),
            r.finish_reason,
            str(r.blocks_evicted),
            str(r.peak_kv_tokens),
            str(r.peak_kv_tokens_without_eviction),
            f"{r.kv_ratio:.2f}x",
        )
    Console(stderr=True).print(table)
