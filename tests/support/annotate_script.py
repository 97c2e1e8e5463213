"""Inputs and a scripted LLM for the annotate tests: SegmentedTrace shards and a stand-in responder.

The responder plays compressor, judge and refiner. What it does wrong is decided by markers in the
trace text, so a test picks each fault per trace:

* `FEWER` in the problem: the first compress answer leaves out the last memento (wrong count).
* `PROSE` in the problem: the first compress answer is prose, not JSON.
* `PLACEHOLDER` in the problem: the first compress answer gives "N/A" for block 1.
* `TRUNCATED` in the problem: the first compress answer stops mid-list (its token limit).
* `NEVER` in the problem: block 2 never gets a memento, even when asked again (-> quarantine).
* `WEAK` in a block: its first memento scores 5 (below the threshold); the refined one scores 9.
* `STUBBORN` in a block: every version scores below the threshold, the first best (6, then 4).
* `MUTE` in a block: the judge never gives a readable verdict (-> quarantine).

And like a weak model (a small model behind llama.cpp):

* `RUNAWAY` in the problem: the first compress answer numbers its mementos "1", "2", ... far past the
  last block, until the server cuts it at the token limit.
* `TERSE` in the problem: at temperature 0 every memento is one character; a re-ask sampled warmer
  (the recipe's varied re-ask) gets real ones.
* `LOOPING` in a block: the judge's verdict repeats one fix until the token limit cuts it.
* `WILD` in a block: the judge's rubric values are out of range ("method": 45, "values": -3).

`sized_responder` is a second scripted model, one that answers like a real one in size (for the
token benchmark and the estimate's accuracy test), over `segmented_sample` (the embedded sample cut
into blocks of >= 300 cl100k tokens at paragraph ends): the compressor returns the extractive memento
of each block (~15 % of it), the judge passes 28 % of first drafts and 90 % of refined ones (the
published single-pass and refined pass rates), seeded by the text so runs repeat, whichever judge
mode asks. Usage is reported in real cl100k tokens of each request (plus 4 a message) and answer.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from itertools import pairwise
from pathlib import Path
from typing import Any

from openmementos.annotate.extractive import extractive_memento
from openmementos.annotate.parsing import RUBRIC
from openmementos.resources import sample_traces
from openmementos.runtime.shardio import iter_records, read_quarantine
from openmementos.schema import AnnotatedTrace, SegmentedTrace, SourceTrace
from openmementos.tokens import count_tokens
from support.openai_standin import Reply
from support.trace_builders import build_segmented, sentence, write_stage_folder

_BLOCK = re.compile(r'<block id="(\d+)">\n(.*?)\n</block>', re.DOTALL)
_BLOCK_ONLY = re.compile(r"<block>\n(.*?)\n</block>", re.DOTALL)
_MEMENTO = re.compile(r"<memento>\n(.*?)\n</memento>", re.DOTALL)
_REASKED = re.compile(r"exactly these blocks \(([\d, ]+)\)")
_PROBLEM = re.compile(r"^(Problem \d+: .*)$", re.MULTILINE)


WORDS = 30
"""Filler words per sentence: blocks long enough for a memento to be much shorter."""


def make_trace(
    number: int,
    *,
    n_blocks: int = 3,
    sentences_per_block: int = 4,
    problem_marker: str = "",
    block_markers: dict[int, str] | None = None,
) -> SegmentedTrace:
    """A consistent SegmentedTrace; markers (see the module docstring) script the responder."""
    block_markers = block_markers or {}
    blocks_sentences = [[sentence(number, b, i, WORDS) for i in range(sentences_per_block)] for b in range(n_blocks)]
    for b, block in enumerate(blocks_sentences):
        if b in block_markers:
            block[0] = f"{block_markers[b]} {block[0]}"
    return build_segmented(
        SegmentedTrace,
        blocks_sentences,
        boundary_score=0.0,
        id=f"trace-{number:04d}",
        problem=f"Problem {number}: find every x_b. {problem_marker}".strip(),
        answer=f"The answer is {number}.",
        domain="math",
        source="synthetic",
        difficulty=number % 10,
    )


def write_segmented(folder: Path, shards: Sequence[Sequence[SegmentedTrace]]) -> Path:
    """A finished `segment` stage folder holding these traces, one list per shard."""
    write_stage_folder(folder, "segment", SegmentedTrace, shards)
    return folder


def read_output(folder: Path) -> tuple[list[AnnotatedTrace], dict[str, str]]:
    """The annotated rows of an annotate folder, and the quarantined ids with their reasons."""
    rows = [row for path in sorted(folder.glob("part-*.parquet")) for row in iter_records(path, AnnotatedTrace)]
    quarantined = {record.id: record.reason for record in read_quarantine(folder)}
    return rows, quarantined


def assert_each_once(folder: Path, expected_ids: Iterable[str]) -> tuple[list[AnnotatedTrace], dict[str, str]]:
    rows, quarantined = read_output(folder)
    seen = [row.id for row in rows] + list(quarantined)
    assert sorted(seen) == sorted(expected_ids), "every input trace exactly once, annotated or quarantined"
    return rows, quarantined


# --------------------------------------------------------------------------- the scripted LLM


def memento_for(block_id: int, text: str) -> str:
    words = text.split()
    memento = f"x_{block_id - 1} computed; " + " ".join(words[4:10])
    if "WEAK" in text or "STUBBORN" in text:
        memento = "weak " + memento
    return memento


def responder(body: dict[str, Any]) -> str | Reply:
    messages = body["messages"]
    system = messages[0]["content"] if messages[0]["role"] == "system" else ""
    user = next(m["content"] for m in messages if m["role"] == "user")  # the instructions top it when folded
    last = messages[-1]["content"]
    followup = last if messages[-1] is not next(m for m in messages if m["role"] == "user") else None
    if JUDGE_TRACE_TASK in user:
        return _judge_trace(user, followup)
    if REFINE_TRACE_TASK in user:
        return _refine_trace(user, followup)
    if "numbered blocks" in user:
        return _compress(user, followup, body.get("temperature") or 0.0)
    if "You grade one memento" in system + user:
        return _judge(user, retried=followup is not None)
    return _refine(user)


JUDGE_TRACE_TASK = "Request: grade the mementos listed below"
REFINE_TRACE_TASK = "Request: improve the mementos listed below"
_LISTED = re.compile(r'<memento id="(\d+)">\n(.*?)\n</memento>', re.DOTALL)
_STILL_NEEDED = re.compile(r"Grade exactly these \(([\d, ]+)\)")


def _to_grade(user: str, followup: str | None) -> tuple[dict[int, str], list[int]]:
    """The mementos a per-trace judge request lists, and the block numbers it asks to grade now."""
    listed = {int(k): v for k, v in _LISTED.findall(user)}
    if followup is None:
        return listed, sorted(listed)
    still = _STILL_NEEDED.search(followup)
    assert still is not None, followup
    return listed, [int(k) for k in still.group(1).split(",")]


def _judge_trace(user: str, followup: str | None) -> str | Reply:
    """Per-trace verdicts, by block number, with the per-memento judge's faults per block."""
    blocks = {int(k): v for k, v in _BLOCK.findall(user)}
    listed, wanted = _to_grade(user, followup)
    verdicts = []
    for key in wanted:
        answer = _judge(f"<block>\n{blocks[key]}\n</block>\n\n<memento>\n{listed[key]}\n</memento>", False)
        if not answer.startswith("{"):
            continue  # MUTE: no verdict for this one
        verdict = json.loads(answer)
        if passes(verdict, user) and "LOOPING" not in blocks[key]:  # a looping model ignores the instruction
            verdict["fixes"] = []  # as the per-trace prompt asks: fixes only where a rewrite follows
        verdicts.append(compact(key, verdict))
    return json.dumps({"verdicts": verdicts})


def compact(key: int, verdict: dict[str, Any]) -> dict[str, Any]:
    """A verdict in the per-trace judge's form: the rubric points as one list."""
    return {"id": key, "points": [verdict[name] for name in RUBRIC], **{k: verdict[k] for k in ("deduction", "fixes")}}


def passes(verdict: dict[str, Any], user: str) -> bool:
    """Whether a per-trace verdict needs no fixes: at or above the threshold the prompt names, or final."""
    if "These grades are final" in user:
        return True
    threshold = float(re.search(r"is below (\d+(?:\.\d+)?) will be rewritten", user).group(1))  # type: ignore[union-attr]
    points = sum(min(max(verdict[name], 0), top) for name, top in RUBRIC.items())
    return points - verdict.get("deduction", 0) >= threshold


def _refine_trace(user: str, followup: str | None) -> str:
    listed = {int(k): v for k, v in _LISTED.findall(user)}
    wanted = sorted(listed) if followup is None else _asked(followup)
    items = [{"id": key, "memento": "better " + listed[key].removeprefix("weak ")} for key in wanted]
    return json.dumps({"mementos": items})


def _compress(user: str, followup: str | None, temperature: float) -> str | Reply:
    blocks = {int(k): v for k, v in _BLOCK.findall(user)}
    problem = _PROBLEM.search(user).group(1)  # type: ignore[union-attr]
    if followup is None and "RUNAWAY" in problem:
        return json.dumps({"mementos": [{"id": n, "memento": str(n)} for n in range(1, 2000)]})
    if "TERSE" in problem and temperature == 0:
        wanted = sorted(blocks) if followup is None else _asked(followup)
        return json.dumps({"mementos": [{"id": key, "memento": str(key)} for key in wanted]})
    if followup is None:
        if "PROSE" in problem:
            return "Here is my summary of the reasoning: it computes several values."
        wanted = sorted(blocks)
        if "FEWER" in problem:
            wanted = wanted[:-1]
    else:
        wanted = _asked(followup)
    items = []
    for key in wanted:
        if "NEVER" in problem and key == 2:
            continue
        memento = memento_for(key, blocks[key])
        if followup is None and "PLACEHOLDER" in problem and key == 1:
            memento = "N/A"
        items.append({"id": key, "memento": memento})
    answer = json.dumps({"mementos": items})
    if followup is None and "TRUNCATED" in problem:
        return Reply(answer[: len(answer) * 2 // 3], finish_reason="length")
    return answer


def _asked(followup: str) -> list[int]:
    return [int(k) for k in _REASKED.search(followup).group(1).split(",")]  # type: ignore[union-attr]


def _verdict(score: float) -> str:
    parts = {"formulas": 3, "values": 2, "method": 2, "verification": 1, "confirmed": 1, "result_first": 1}
    return json.dumps({**parts, "deduction": 10 - score, "fixes": ["quote x_b", "drop filler", "lead with result"]})


def _judge(user: str, retried: bool) -> str:
    block = _BLOCK_ONLY.search(user).group(1)
    memento = _MEMENTO.search(user).group(1)
    if "MUTE" in block:
        return "I would rather not grade this."
    if "LOOPING" in block:
        parts = {"formulas": 3, "values": 2, "method": 2, "verification": 1, "confirmed": 1, "result_first": 1}
        return json.dumps({**parts, "deduction": 1, "fixes": ["quote x_b verbatim"] * 5000})
    if "WILD" in block:
        parts = {"formulas": 3, "values": -3, "method": 45, "verification": 1, "confirmed": 1, "result_first": 1}
        return json.dumps({**parts, "deduction": 0, "fixes": ["lead with the result"]})
    if "STUBBORN" in block:
        return _verdict(6 if memento.startswith("weak ") else 4)
    return _verdict(5 if memento.startswith("weak ") else 9)


def _refine(user: str) -> str:
    memento = _MEMENTO.search(user).group(1)
    return json.dumps({"memento": "better " + memento.removeprefix("weak ")})


# --------------------------------------------------------------------------- a model sized like a real one

MIN_BLOCK_TOKENS = 300
FIRST_PASS_RATE, REFINED_PASS_RATE = 0.28, 0.90
REFINED = "Refined: "


def segmented_sample(copies: int = 1) -> list[SegmentedTrace]:
    """The embedded sample as SegmentedTraces: paragraphs as sentences, blocks of >= 300 tokens."""
    return [_segment(source, copy) for source in sample_traces() for copy in range(copies)]


def _segment(source: SourceTrace, copy: int) -> SegmentedTrace:
    text = source.reasoning
    bounds = sorted({0, *(m.end() for m in re.finditer(r"\n\n+", text)), len(text)})
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


def _chance(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def _sized_verdict(memento: str, fixes: bool = True) -> dict[str, Any]:
    rate = REFINED_PASS_RATE if memento.startswith(REFINED) else FIRST_PASS_RATE
    score = 9 if _chance(memento.removeprefix(REFINED)) < rate else 6
    parts = {"formulas": 3, "values": 2, "method": 2, "verification": 1, "confirmed": 1, "result_first": 1}
    wanted = ["Quote the key equation verbatim.", "Lead with the result.", "Drop the narration."] if fixes else []
    return {**parts, "deduction": 10 - score, "fixes": wanted}


def _sized_answer(body: dict[str, Any]) -> str:
    messages = body["messages"]
    system, user, last = messages[0]["content"], messages[1]["content"], messages[-1]["content"]
    followup = last if len(messages) > 2 else None
    if JUDGE_TRACE_TASK in user:
        listed, wanted = _to_grade(user, followup)
        verdicts = []
        for key in wanted:
            verdict = _sized_verdict(listed[key])
            if passes(verdict, user):
                verdict["fixes"] = []
            verdicts.append(compact(key, verdict))
        return json.dumps({"verdicts": verdicts})
    if REFINE_TRACE_TASK in user:
        listed = {int(k): v for k, v in _LISTED.findall(user)}
        wanted = sorted(listed) if followup is None else _asked(followup)
        return json.dumps({"mementos": [{"id": key, "memento": REFINED + listed[key]} for key in wanted]})
    if "numbered blocks" in user:
        blocks = {int(k): v for k, v in _BLOCK.findall(user)}
        wanted = sorted(blocks) if followup is None else _asked(followup)
        return json.dumps({"mementos": [{"id": key, "memento": extractive_memento(blocks[key])} for key in wanted]})
    memento = _MEMENTO.search(user).group(1)  # type: ignore[union-attr]
    if "You grade one memento" in system:
        return json.dumps(_sized_verdict(memento))
    return json.dumps({"memento": REFINED + memento})


def billed(body: dict[str, Any], text: str) -> Reply:
    """`text` as the answer to `body`, with the usage OpenAI would bill (cl100k, 4 tokens per message)."""
    prompt = sum(count_tokens([m["content"] for m in body["messages"]])) + 4 * len(body["messages"])
    return Reply(text, prompt_tokens=prompt, completion_tokens=count_tokens([text])[0])


def sized_responder(body: dict[str, Any]) -> Reply:
    return billed(body, _sized_answer(body))
