"""Conversations in the model's own chat template: one place for training, `generate` and every backend.

A row is one exchange: the problem is the user turn, the memento-formatted response the assistant turn.
Both are rendered by the tokenizer's chat template (`tokenizer.apply_chat_template`); a tokenizer
without a template gets ChatML (`CHATML_TEMPLATE`), the format of the published recipe.

Where the assistant tokens start is found exactly, without searching the text for the response: the
prompt is the template's own generation prompt (`add_generation_prompt=True`), the conversation is the
same template with the assistant turn, and the conversation must extend the prompt. The prompt and the
rest are tokenised separately, so the prompt tokens of training are exactly the tokens generation
feeds, and everything after them (the response as the template renders it, and its end-of-turn token)
is the assistant's. A template that renders its assistant turn in a way that does not extend its own
generation prompt gets a clear error instead of silently misplaced labels.
"""

from __future__ import annotations

from dataclasses import dataclass

CHATML_TEMPLATE = (
    "{%- if bos_token %}{{ bos_token }}{% endif %}"
    "{%- for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
"""ChatML, for tokenizers that bring no chat template (`<|im_start|>role\\n...<|im_end|>`)."""

_PROBE = "\x00openmementos-end-of-turn-probe\x00"
"""A response no real text contains: what the template renders after it is its end of turn."""


@dataclass(frozen=True)
class ChatEncoding:
    """One rendered exchange: `prompt_ids` then `response_ids` (the assistant turn up to its end token)."""

    prompt_ids: list[int]
    response_ids: list[int]

    @property
    def input_ids(self) -> list[int]:
        return self.prompt_ids + self.response_ids


def chat_template(tokenizer) -> str:
    """The tokenizer's own chat template, or ChatML when it has none."""
    return tokenizer.chat_template or CHATML_TEMPLATE


class ChatFormat:
    """A tokenizer's chat template, with its end-of-turn ids worked out once."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.template = chat_template(tokenizer)
        self.end_of_turn_ids = self._end_of_turn_ids()

    def prompt_text(self, problem: str) -> str:
        """The text the model sees before it answers: the user turn and the template's generation prompt."""
        return self._render([_user(problem)], add_generation_prompt=True)

    def encode_prompt(self, problem: str) -> list[int]:
        """Token ids of the prompt, exactly as training places them in front of the response."""
        return self._tokenize(self.prompt_text(problem))

    def encode(self, problem: str, response: str) -> ChatEncoding:
        """Render (problem, response) with the template; split it where the generation prompt ends.

        The response part stops after the template's end-of-turn token: what a template adds after it
        (a newline, say) is never generated, so it is neither trained on nor fed.
        """
        prompt = self.prompt_text(problem)
        conversation = self._render([_user(problem), {"role": "assistant", "content": response}])
        if not conversation.startswith(prompt):
            raise ValueError(
                "the chat template renders the assistant turn in a way that does not extend its own generation "
                "prompt, so the assistant tokens cannot be located exactly; fix the tokenizer's chat_template "
                f"(its generation prompt ends with {prompt[-30:]!r})"
            )
        response_ids = self._tokenize(conversation[len(prompt) :])
        ends = [i for i, token in enumerate(response_ids) if token in self.end_of_turn_ids]
        if ends:
            response_ids = response_ids[: ends[-1] + 1]
        return ChatEncoding(self._tokenize(prompt), response_ids)

    def _end_of_turn_ids(self) -> frozenset[int]:
        """The template's end-of-turn token (the first special token it writes after a response) and EOS."""
        conversation = self._render([_user("?"), {"role": "assistant", "content": _PROBE}])
        end = conversation.rfind(_PROBE)
        after = self._tokenize(conversation[end + len(_PROBE) :]) if end >= 0 else []  # a template that rewrites it
        special = set(self.tokenizer.all_special_ids)
        special |= {i for i, token in self.tokenizer.added_tokens_decoder.items() if token.special}
        first = next((token for token in after if token in special), None)
        eos = self.tokenizer.eos_token_id
        return frozenset(({first} if first is not None else set()) | ({eos} if eos is not None else set()))

    def _render(self, messages: list[dict], *, add_generation_prompt: bool = False) -> str:
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, add_generation_prompt=add_generation_prompt, tokenize=False
        )

    def _tokenize(self, text: str) -> list[int]:
        # Templates write their own BOS and special tokens: add none (as apply_chat_template does).
        return self.tokenizer.encode(text, add_special_tokens=False)


def encode_prompt(tokenizer, problem: str) -> list[int]:
    """Token ids of the prompt in the tokenizer's chat template (ChatML without one)."""
    return ChatFormat(tokenizer).encode_prompt(problem)


def _user(problem: str) -> dict:
    return {"role": "user", "content": problem}
