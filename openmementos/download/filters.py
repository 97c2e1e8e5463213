"""The content filters of SPEC 4.1, applied to traces that converted cleanly.

Each rejection raises `TraceRejected` with a stable reason code, counted in the manifest:

- `empty_answer`: nothing but whitespace after `</think>`;
- `cjk`: a CJK character anywhere in the problem, reasoning or answer (the teacher drifting into
  Chinese, or a non-English problem); `keep_cjk` turns this off for corpora in those languages;
- `too_few_sentences`: the reasoning has fewer than `min_sentences` sentences (degenerate traces).

The structural reasons (no or unclosed `<think>`, wrong turn layout, non-string fields, ...) come
earlier, from `SourceTrace.from_openthoughts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from openmementos.schema import SourceTrace, TraceRejected
from openmementos.sentences import split_sentences

CJK = re.compile(
    "["
    "\u3000-\u303f"  # CJK symbols and punctuation (ideographic space, 。, 「」)
    "\u3040-\u30ff"  # hiragana, katakana
    "\u3400-\u4dbf"  # CJK unified ideographs extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\uac00-\ud7af"  # hangul syllables
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff00-\uffef"  # half-width and full-width forms (，：（）)
    "\U00020000-\U0002fa1f"  # ideograph extensions B-F and compatibility supplement
    "]"
)


@dataclass(frozen=True)
class Filters:
    min_sentences: int = 2
    keep_cjk: bool = False

    def check(self, trace: SourceTrace) -> None:
        """Raise `TraceRejected` if the trace must not enter the pipeline."""
        if not trace.answer.strip():
            raise TraceRejected("empty_answer", "nothing follows </think>")
        if not self.keep_cjk:
            for name in ("problem", "reasoning", "answer"):
                if match := CJK.search(getattr(trace, name)):
                    char, where = match.group(), match.start()
                    raise TraceRejected("cjk", f"the {name} has {char!r} (U+{ord(char):04X}) at character {where}")
        sentences = len(split_sentences(trace.reasoning)) if trace.reasoning.strip() else 0
        if sentences < self.min_sentences:
            detail = f"the reasoning has {sentences} sentences, fewer than {self.min_sentences}"
            raise TraceRejected("too_few_sentences", detail)
