"""Tokens sent per annotated trace: the recipe with the judge and refinement, against a single pass.

Runs `openmementos annotate` on the embedded sample (cut into blocks of >= 300 cl100k tokens at
paragraph ends) against the loopback OpenAI stand-in. Its scripted model answers like a real one in
size: the compressor returns an extractive memento per block (~15 % of the block), the judge passes
28 % of first drafts and 90 % of refined ones (the published single-pass and refined pass rates),
seeded by the text so runs repeat. Usage is reported in real cl100k tokens of each request and answer.

The baseline is the single pass (`--no-judge`), measured in the same run; the reasoning tokens per
trace are the floor (every block must be sent once).

    .venv/bin/python benchmarks/bench_annotate_tokens.py [--copies 4]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any

import support_path  # noqa: F401  (tests/ on the path, for `support`)
from support.openai_standin import Faults, OpenAIStandIn, Reply
from typer.testing import CliRunner

from openmementos.annotate.extractive import extractive_memento
from openmementos.cli import app
from openmementos.llm import PriceTable
from openmementos.resources import sample_traces
from openmementos.runtime.stage import ShardTask, Stage
from openmementos.schema import SegmentedTrace, SourceTrace
from openmementos.tokens import count_tokens

MODEL = "gpt-4.1-mini"
MIN_BLOCK_TOKENS = 300
FIRST_PASS_RATE, REFINED_PASS_RATE = 0.28, 0.90
_BLOCK = re.compile(r'<block id="(\d+)">\n(.*?)\n</block>', re.DOTALL)
_BLOCK_ONLY = re.compile(r"<block>\n(.*?)\n</block>", re.DOTALL)
_MEMENTO = re.compile(r"<memento>\n(.*?)\n</memento>", re.DOTALL)
_REASKED = re.compile(r"exactly these blocks \(([\d, ]+)\)")


# --------------------------------------------------------------------------- inputs


def segmented_sample(copies: int) -> list[SegmentedTrace]:
    """The embedded sample as SegmentedTraces: paragraphs as sentences, blocks of >= 300 tokens."""
    return [_segment(source, copy) for source in sample_traces() for copy in range(copies)]


def _segment(source: SourceTrace, copy: int) -> SegmentedTrace:
    text = source.reasoning
    pieces = [m.end() for m in re.finditer(r"\n\n+", text)]
    bounds = sorted({0, *pieces, len(text)})
    spans = [[a, b] for a, b in pairwise(bounds) if b > a]
    sizes = count_tokens([text[a:b] for a, b in spans])
    blocks, first, running = [], 0, 0
    for index, size in enumerate(sizes):
        running += size
        if running >= MIN_BLOCK_TOKENS and sum(sizes[index + 1 :]) >= MIN_BLOCK_TOKENS:
            blocks.append([first, index])
            first, running = index + 1, 0
    blocks.append([first, len(spans) - 1])
    block_texts = [text[spans[a][0] : spans[b][1]] for a, b in blocks]
    return SegmentedTrace(
        **{**source.model_dump(), "id": f"{source.id}-{copy}", "problem": f"{source.problem} (copy {copy})"},
        sentence_spans=spans,
        sentence_tokens=sizes,
        boundary_scores=[0.0] * (len(spans) - 1),
        blocks=blocks,
        block_tokens=count_tokens(block_texts),
        scorer="paragraphs",
        tokenizer="cl100k_base",
    )


def write_segmented(folder: Path, traces: list[SegmentedTrace]) -> None:
    tasks = [ShardTask(0, "part-00000", traces)]
    Stage(name="segment", out_dir=folder, model=SegmentedTrace, process=_emit).run(tasks)


def _emit(task: ShardTask[list[SegmentedTrace]]) -> list[SegmentedTrace]:
    return task.source


# --------------------------------------------------------------------------- the scripted model


def _chance(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _verdict(score: float) -> str:
    parts = {"formulas": 3, "values": 2, "method": 2, "verification": 1, "confirmed": 1, "result_first": 1}
    fixes = ["Quote the key equation verbatim.", "Lead with the result.", "Drop the narration."]
    return json.dumps({**parts, "deduction": 10 - score, "fixes": fixes})


def _answer(body: dict[str, Any]) -> str:
    messages = body["messages"]
    system, user, last = messages[0]["content"], messages[1]["content"], messages[-1]["content"]
    if "numbered blocks" in user:
        segments = dict(_BLOCK.findall(user))
        wanted = _REASKED.search(last).group(1).split(", ") if len(messages) > 2 else list(segments)
        items = [{"id": int(key), "memento": extractive_memento(segments[key])} for key in wanted]
        return json.dumps({"mementos": items})
    memento = _MEMENTO.search(user).group(1)
    if "You grade one memento" in system:
        refined = memento.startswith("Refined: ")
        passes = _chance(memento) < (REFINED_PASS_RATE if refined else FIRST_PASS_RATE)
        return _verdict(9 if passes else 6)
    return json.dumps({"memento": "Refined: " + memento})


def responder(body: dict[str, Any]) -> Reply:
    text = _answer(body)
    prompt = sum(count_tokens([m["content"] for m in body["messages"]])) + 4 * len(body["messages"])
    return Reply(text, prompt_tokens=prompt, completion_tokens=count_tokens([text])[0])


# --------------------------------------------------------------------------- the run


def annotate(in_dir: Path, out_dir: Path, base_url: str, *extra: str) -> dict[str, Any]:
    args = ["annotate", str(in_dir), str(out_dir), "--model", MODEL, "--base-url", base_url, "--api-key", "bench"]
    result = CliRunner().invoke(app, [*args, *extra])
    if result.exit_code != 0:
        raise SystemExit(result.output)
    return json.loads((out_dir / "annotate_report.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of each sample trace (distinct requests)")
    args = parser.parse_args()
    traces = segmented_sample(args.copies)
    reasoning = sum(sum(t.block_tokens) for t in traces) / len(traces)
    blocks = sum(len(t.blocks) for t in traces) / len(traces)
    with tempfile.TemporaryDirectory() as tmp, OpenAIStandIn(Faults(), responder=responder) as server:
        root = Path(tmp)
        write_segmented(root / "segmented", traces)
        single = annotate(root / "segmented", root / "single", server.base_url, "--judge", "off")
        judged = annotate(root / "segmented", root / "judged", server.base_url)
    print(f"{len(traces)} traces, {blocks:.1f} blocks and {reasoning:,.0f} reasoning tokens per trace (cl100k)")
    print(
        f"{'recipe':<28}{'requests':>10}{'prompt tok':>12}{'answer tok':>12}{'sent/reasoning':>16}{'$/1K traces':>13}"
    )
    price = PriceTable().price(MODEL)
    for name, summary in (("single pass (--no-judge)", single), ("judge + refine (2 rounds)", judged)):
        per = summary["usage"]["per_trace"]
        cost = (per["prompt_tokens"] * price.input_per_mtok + per["completion_tokens"] * price.output_per_mtok) / 1e3
        print(
            f"{name:<28}{per['requests']:>10.1f}{per['prompt_tokens']:>12,.0f}{per['completion_tokens']:>12,.0f}"
            f"{per['prompt_tokens'] / reasoning:>16.2f}{cost:>13.2f}"
        )
    ratio = judged["usage"]["per_trace"]["prompt_tokens"] / single["usage"]["per_trace"]["prompt_tokens"]
    rates = ", ".join(f"after round {k}: {v:.0%}" for k, v in judged["judge"]["pass_rate_after_round"].items())
    print(f"judge + refine sends {ratio:.2f}x the prompt tokens of the single pass (baseline, same run)")
    print(f"judge pass rate {rates}; by step: " + ", ".join(
        f"{step} {usage['prompt_tokens'] / len(traces):,.0f}" for step, usage in judged["usage"]["by_step"].items()
    ) + " prompt tokens per trace")  # fmt: skip
    print(f"prices: {MODEL} at ${price.input_per_mtok}/M in, ${price.output_per_mtok}/M out (Batch API: half)")


if __name__ == "__main__":
    main()
