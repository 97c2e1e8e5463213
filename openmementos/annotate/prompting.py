"""The messages of the recipe: compress a trace, re-ask for missing mementos, judge one, refine one.

The instructions live in `prompts/compress.md`, `prompts/judge.md` and `prompts/refine.md`; this module
only frames the data (problem, numbered blocks, memento, fixes). The framing templates are hashed
with the prompt files into `PromptSet.version`, recorded as `prompt_version` in every annotated row,
so any wording change shows up in the data.

The system prompt comes first and the long, trace-specific text last, so servers with prefix caching
reuse the instructions across calls; a re-ask extends the original conversation, so its long prefix
(the whole trace) is a cache hit there too.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache

from openmementos.annotate.parsing import REFINED_SCHEMA, VERDICT_SCHEMA, mementos_schema
from openmementos.llm.request import REASK_TEMPERATURE_STEP
from openmementos.resources import content_hash, read_prompt

Message = dict[str, str]

COMPRESS_USER = (
    "Problem (context only; write no memento for it):\n{problem}\n\n"
    "The reasoning, in {count} numbered blocks:\n\n{blocks}"
)
BLOCK = '<block id="{id}">\n{text}\n</block>'
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
REFINE_USER = "<block>\n{block}\n</block>\n\n<memento>\n{memento}\n</memento>\n\nFixes to apply:\n{feedback}"


@dataclass(frozen=True)
class PromptSet:
    compress: str
    judge: str
    refine: str

    @property
    def version(self) -> str:
        """Content hash of the three prompts, the framing around the data, the answer schemas and the
        re-ask schedule: everything besides the model that shapes an answer."""
        schemas = json.dumps([mementos_schema([1]), VERDICT_SCHEMA, REFINED_SCHEMA], sort_keys=True)
        return content_hash(
            self.compress, self.judge, self.refine, COMPRESS_USER, BLOCK, REASK_USER, JUDGE_USER,
            JUDGE_RETRY_USER, REFINE_USER, schemas, str(REASK_TEMPERATURE_STEP),
        )  # fmt: skip


@cache
def default_prompts() -> PromptSet:
    """The prompts shipped in `prompts/`."""
    return PromptSet(read_prompt("compress.md"), read_prompt("judge.md"), read_prompt("refine.md"))


def compress_messages(prompts: PromptSet, problem: str, blocks: Sequence[str]) -> list[Message]:
    """The compressor's conversation: all blocks of a trace, numbered from 1."""
    numbered = "\n\n".join(BLOCK.format(id=index, text=text) for index, text in enumerate(blocks, 1))
    user = COMPRESS_USER.format(problem=problem.strip(), count=len(blocks), blocks=numbered)
    return [{"role": "system", "content": prompts.compress}, {"role": "user", "content": user}]


def follow_up(conversation: Sequence[Message], answer: str, user: str) -> list[Message]:
    """`conversation` continued: the model's last answer, then a new user turn."""
    return [*conversation, {"role": "assistant", "content": answer}, {"role": "user", "content": user}]


def describe_problems(problems: Mapping[int, str]) -> str:
    """Block numbers with what is wrong with each, in order: "2 (empty), 5 (a placeholder)"."""
    return ", ".join(f"{key} ({problems[key]})" for key in sorted(problems))


def reask_messages(conversation: Sequence[Message], answer: str, problems: Mapping[int, str]) -> list[Message]:
    """`conversation` continued: the last answer, then a request for exactly the blocks in `problems`."""
    user = REASK_USER.format(problems=describe_problems(problems), ids=", ".join(map(str, sorted(problems))))
    return follow_up(conversation, answer, user)


def judge_messages(prompts: PromptSet, block: str, memento: str) -> list[Message]:
    return [
        {"role": "system", "content": prompts.judge},
        {"role": "user", "content": JUDGE_USER.format(block=block, memento=memento)},
    ]


def judge_retry_messages(conversation: Sequence[Message], answer: str) -> list[Message]:
    return follow_up(conversation, answer, JUDGE_RETRY_USER)


def refine_messages(prompts: PromptSet, block: str, memento: str, feedback: str) -> list[Message]:
    user = REFINE_USER.format(block=block, memento=memento, feedback=feedback or "- (none given)")
    return [{"role": "system", "content": prompts.refine}, {"role": "user", "content": user}]
