"""Show one trace of a published dataset: its blocks and their mementos, loaded with `datasets`.

    python -m openmementos.demo_show out/demo/published [--index 3] [--full]

The last step of `make demo`: it proves the published folder loads with
`datasets.load_dataset(folder, "full")` and shows what a memento looks like next to its block.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from openmementos.format import parse_response

_HEAD, _TAIL = 320, 160  # characters of a block shown at its start and end unless --full


def abridge(text: str, full: bool) -> str:
    """A block's text, its middle elided unless `full`."""
    if full or len(text) <= _HEAD + _TAIL + 40:
        return text
    hidden = len(text) - _HEAD - _TAIL
    return f"{text[:_HEAD]}\n[... {hidden:,} characters ...]\n{text[-_TAIL:]}"


def show(folder: Path, index: int = 0, full: bool = False) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no network (read before the import)
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    import datasets
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    datasets.disable_progress_bars()
    rows = datasets.load_dataset(str(folder), "full", split="train")
    console = Console()
    if not 0 <= index < rows.num_rows:
        raise SystemExit(f"--index must be between 0 and {rows.num_rows - 1}")
    row = rows[index]
    parsed = parse_response(row["response"])
    console.print(
        f'[bold]datasets.load_dataset("{folder}", "full")[/]: {rows.num_rows:,} rows, columns '
        f"{', '.join(rows.column_names)}"
    )
    console.print(
        f"\n[bold]Trace {index}[/] ({row['domain']} / {row['source']}): {len(row['blocks'])} blocks, "
        f"{len(row['sentences'])} sentences"
    )
    console.print(Panel(Text(abridge(row["problem"], full)), title="problem", title_align="left"))
    for number, ((first, last), block, memento) in enumerate(
        zip(row["blocks"], parsed.blocks, row["block_summaries"], strict=True), start=1
    ):
        title = f"block {number} (sentences {first}-{last}, {len(block):,} characters)"
        console.print(Panel(Text(abridge(block, full)), title=title, title_align="left", border_style="dim"))
        console.print(Panel(Text(memento), title=f"memento {number}", title_align="left", border_style="green"))
    console.print(Panel(Text(abridge(parsed.answer, full)), title="final answer", title_align="left"))
    total = sum(len(b) for b in parsed.blocks)
    kept = sum(len(m) for m in row["block_summaries"])
    console.print(
        f"After each memento the block's KV entries can be dropped: the mementos keep {kept:,} of "
        f"{total:,} reasoning characters ({kept / total:.0%})."
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m openmementos.demo_show", description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a published folder (openmementos publish --to DIR)")
    parser.add_argument("--index", type=int, default=0, help="which row to show (default 0)")
    parser.add_argument("--full", action="store_true", help="print whole blocks instead of their start and end")
    args = parser.parse_args(argv)
    show(args.folder, args.index, args.full)


if __name__ == "__main__":
    main()
