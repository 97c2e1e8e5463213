"""The messages of the recipe: compress a trace, re-ask for missing mementos, judge, refine.

The instructions live in `prompts/`; this module only frames the data (problem, numbered blocks,
mementos, fixes). The framing templates are hashed with the prompt files into `PromptSet.version`,
recorded as `prompt_version` in every annotated row, so any wording change shows up in the data.

Laid out for provider prefix caching: every request about one trace (compress, its re-asks, the
per-trace judge and refinement) opens with the same long prefix, the shared system prompt
(`prompts/compress.md`) and then the trace itself (`trace_text`: problem and numbered blocks), and only
then says what it wants. OpenAI caches such prefixes automatically once they reach 1,024 tokens, vLLM
and SGLang at any length, so after the first request of a trace its blocks are billed at the cached
rate. A re-ask extends the conversation it follows, so its whole history is a cached prefix too. The
per-memento judge (the paper's) sends one block per request under its own system prompt: short
requests that share only that prompt.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from openmementos.annotate.parsing import REFINED_SCHEMA, VERDICT_SCHEMA, mementos_schema, verdicts_schema
from openmementos.llm.request import REASK_TEMPERATURE_STEP
from openmementos.resources import content_hash, read_prompt

Message = dict[str, str]

TRACE_USER = (
    "Problem (context only; write no memento for it):\n{problem}\n\n"
    "The reasoning, in {count} numbered blocks:\n\n{blocks}"
)
BLOCK = '<block id="{id}">\n{text}\n</block>'
COMPRESS_TASK = (
    "Request: write one memento for every block, 1 to {count}. Answer with JSON only, one entry per "
    'block, in order: {{"mementos": [{{"id": 1, "memento": "..."}}, {{"id": 2, "memento": "..."}}]}}'
)
REASK_USER = (
    "These blocks still need a usable memento: {problems}. Write mementos for exactly these blocks "
    "({ids}), following the same rules. Answer with JSON only: "
    '{{"mementos": [{{"id": <block number>, "memento": "..."}}]}}'
)
JUDGE_USER = "<block>\n{block}\n</block>\n\n<memento>\n{memento}\n</memento>"
JUDGE_RETRY_USER = (
    "Your answer could not be read: it must be the JSON object described above, with the six criteria, "
    "the deduction and the fixes. Answer again with JSON only."
)
JUDGE_TRACE_RETRY_USER = (
    "These mementos still need a readable verdict: {problems}. Grade exactly these ({ids}) as described "
    'above. Answer with JSON only: {{"verdicts": [{{"id": <block number>, ...}}]}}'
)
REFINE_USER = "<block>\n{block}\n</block>\n\n<memento>\n{memento}\n</memento>\n\nFixes to apply:\n{feedback}"
LISTED_MEMENTO = '<memento id="{id}">\n{memento}\n</memento>'
LISTED_FIXES = '<fixes id="{id}">\n{feedback}\n</fixes>'
LAST_ROUND = 'These grades are final (no rewrite follows): give no fixes, "fixes": [] for every memento.'
TASK_SEPARATOR = "\n\n---\n\n"
"""Between the shared prefix (the trace) and what one request asks."""


@dataclass(frozen=True)
class PromptSet:
    compress: str
    """The system prompt of every request about a whole trace: what a memento is and its rules."""
    judge: str
    """The per-memento judge's system prompt (the rubric)."""
    refine: str
    """The per-memento refiner's system prompt."""
    judge_trace: str
    """The per-trace judge's request, after the trace: the rubric, once, for every listed memento."""
    refine_trace: str
    """The per-trace refiner's request, after the trace."""

    @property
    def version(self) -> str:
        """Content hash of the prompts, the framing around the data, the answer schemas and the re-ask
        schedule: everything besides the model that shapes an answer."""
        schemas = json.dumps(
            [mementos_schema([1]), VERDICT_SCHEMA, REFINED_SCHEMA, verdicts_schema([1])], sort_keys=True
        )
        return content_hash(
            self.compress, self.judge, self.refine, self.judge_trace, self.refine_trace, TRACE_USER, BLOCK,
            COMPRESS_TASK, REASK_USER, JUDGE_USER, JUDGE_RETRY_USER, JUDGE_TRACE_RETRY_USER, REFINE_USER,
            LISTED_MEMENTO, LISTED_FIXES, LAST_ROUND, TASK_SEPARATOR, schemas, str(REASK_TEMPERATURE_STEP),
        )  # fmt: skip


@cache
def default_prompts() -> PromptSet:
    """The prompts shipped in `prompts/`."""
    names = ("compress", "judge", "refine", "judge_trace", "refine_trace")
    return PromptSet(*(read_prompt(f"{name}.md") for name in names))


def trace_text(problem: str, blocks: Sequence[str]) -> str:
    """A trace as every request about it shows it: the problem, then all blocks, numbered from 1."""
    numbered = "\n\n".join(BLOCK.format(id=index, text=text) for index, text in enumerate(blocks, 1))
    return TRACE_USER.format(problem=problem.strip(), count=len(blocks), blocks=numbered)


def about_trace(prompts: PromptSet, trace: str, request: str) -> list[Message]:
    """A request about a whole trace: the shared prefix (system prompt, the trace), then `request`."""
    return [
        {"role": "system", "content": prompts.compress},
        {"role": "user", "content": trace + TASK_SEPARATOR + request},
    ]


def compress_messages(prompts: PromptSet, trace: str, count: int) -> list[Message]:
    """The compressor's conversation: a memento for each of the `count` blocks of `trace`."""
    return about_trace(prompts, trace, COMPRESS_TASK.format(count=count))


def follow_up(conversation: Sequence[Message], answer: str, user: str) -> list[Message]:
    """`conversation` continued: the model's last answer, then a new user turn."""
    return [*conversation, {"role": "assistant", "content": answer}, {"role": "user", "content": user}]


def describe_problems(problems: Mapping[int, str]) -> str:
    """Block numbers with what is wrong with each, in order: "2 (empty), 5 (a placeholder)"."""
    return ", ".join(f"{key} ({problems[key]})" for key in sorted(problems))


def _ids(keys: Iterable[int]) -> str:
    return ", ".join(map(str, sorted(keys)))


def reask_messages(conversation: Sequence[Message], answer: str, problems: Mapping[int, str]) -> list[Message]:
    """`conversation` continued: the last answer, then a request for exactly the blocks in `problems`."""
    return follow_up(conversation, answer, REASK_USER.format(problems=describe_problems(problems), ids=_ids(problems)))


def judge_messages(prompts: PromptSet, block: str, memento: str) -> list[Message]:
    """The per-memento judge: one block and its memento under the rubric."""
    return [
        {"role": "system", "content": prompts.judge},
        {"role": "user", "content": JUDGE_USER.format(block=block, memento=memento)},
    ]


def judge_retry_messages(conversation: Sequence[Message], answer: str) -> list[Message]:
    return follow_up(conversation, answer, JUDGE_RETRY_USER)


def refine_messages(prompts: PromptSet, block: str, memento: str, feedback: str) -> list[Message]:
    user = REFINE_USER.format(block=block, memento=memento, feedback=feedback or "- (none given)")
    return [{"role": "system", "content": prompts.refine}, {"role": "user", "content": user}]


def judge_trace_messages(
    prompts: PromptSet, trace: str, mementos: Mapping[int, str], threshold: float, last_round: bool
) -> list[Message]:
    """The per-trace judge: the trace, the rubric once, then every memento to grade, by block number.

    Fixes are asked only where a refinement will use them: for mementos below `threshold`, and not in
    the `last_round` (its verdicts are final)."""
    rubric = prompts.judge_trace.strip().replace("{threshold}", f"{threshold:g}")
    listed = "\n\n".join(LISTED_MEMENTO.format(id=key, memento=mementos[key]) for key in sorted(mementos))
    final = f"\n\n{LAST_ROUND}" if last_round else ""
    return about_trace(prompts, trace, f"{rubric}{final}\n\n{listed}")


def judge_trace_retry_messages(
    conversation: Sequence[Message], answer: str, problems: Mapping[int, str]
) -> list[Message]:
    """The per-trace judge's conversation continued: a verdict for exactly the mementos in `problems`."""
    user = JUDGE_TRACE_RETRY_USER.format(problems=describe_problems(problems), ids=_ids(problems))
    return follow_up(conversation, answer, user)


def refine_trace_messages(
    prompts: PromptSet, trace: str, mementos: Mapping[int, str], feedback: Mapping[int, str]
) -> list[Message]:
    """The per-trace refiner: the trace, then each memento to rewrite with its fixes, by block number."""
    listed = "\n\n".join(
        LISTED_MEMENTO.format(id=key, memento=mementos[key])
        + "\n"
        + LISTED_FIXES.format(id=key, feedback=feedback.get(key) or "- (none given)")
        for key in sorted(mementos)
    )
    return about_trace(prompts, trace, f"{prompts.refine_trace.strip()}\n\n{listed}")
