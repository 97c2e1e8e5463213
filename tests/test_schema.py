import datasets
import pyarrow as pa
import pytest
from pydantic import ValidationError

from openmementos.format import BLOCK_START
from openmementos.schema import (
    AnnotatedTrace,
    DefaultRow,
    FullRow,
    SegmentedTrace,
    SourceTrace,
    TraceRejected,
    Usage,
    arrow_schema,
    features,
    sum_usage,
)


def ot3_row(gpt: str, **overrides):
    row = {
        "difficulty": 5,
        "source": "unit",
        "domain": "math",
        "conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": gpt}],
    }
    return {**row, **overrides}


def test_from_openthoughts_is_lossless():
    gpt = "<think>\nOkay. 2+2=4.\n</think>\n\nThe answer is **4**."
    trace = SourceTrace.from_openthoughts(ot3_row(gpt))
    assert trace.reasoning == "\nOkay. 2+2=4.\n"
    assert trace.answer == "The answer is **4**."
    assert trace.assistant_text() == gpt
    assert trace.id == SourceTrace.from_openthoughts(ot3_row(gpt)).id  # stable without an id column


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (ot3_row("no think at all"), "no_think"),
        (ot3_row("<think>\nI was cut off mid-sen"), "unclosed_think"),
        (ot3_row("<think>a</think><think>b</think>c"), "multiple_think"),
        (ot3_row("</think>a<think>b"), "misordered_think"),
        (ot3_row(f"<think>{BLOCK_START}</think>a"), "contains_delimiter"),
        (ot3_row("<think>a</think>b", domain=3), "not_a_string"),
        (ot3_row("<think>a</think>b", difficulty="hard"), "bad_difficulty"),
        ({**ot3_row("x"), "conversations": [{"from": "human", "value": 1}]}, "not_a_string"),
        ({**ot3_row("x"), "conversations": [{"from": "human", "value": "q"}]}, "bad_conversations"),
        ({**ot3_row("x"), "conversations": None}, "bad_conversations"),
    ],
)
def test_from_openthoughts_rejects_with_reason(row, reason):
    with pytest.raises(TraceRejected) as caught:
        SourceTrace.from_openthoughts(row)
    assert caught.value.reason == reason


def segmented(**overrides):
    fields = {
        "id": "t1",
        "problem": "p",
        "reasoning": "One. Two. Three.",
        "answer": "3",
        "domain": "math",
        "source": "unit",
        "difficulty": None,
        "sentence_spans": [[0, 4], [4, 9], [9, 16]],
        "sentence_tokens": [2, 2, 2],
        "boundary_scores": [1.0, 2.0],
        "blocks": [[0, 1], [2, 2]],
        "block_tokens": [4, 2],
        "scorer": "heuristic",
        "tokenizer": "cl100k_base",
    }
    return {**fields, **overrides}


def test_segmented_trace_invariants():
    trace = SegmentedTrace(**segmented())
    assert trace.block_texts() == ["One. Two.", " Three."]
    with pytest.raises(ValidationError, match="does not continue"):
        SegmentedTrace(**segmented(sentence_spans=[[0, 4], [5, 9], [9, 16]]))
    with pytest.raises(ValidationError, match="reasoning has 16"):
        SegmentedTrace(**segmented(sentence_spans=[[0, 4], [4, 9], [9, 15]]))
    with pytest.raises(ValidationError, match="block 1"):
        SegmentedTrace(**segmented(blocks=[[0, 0], [2, 2]]))
    with pytest.raises(ValidationError, match="blocks end at sentence 1"):
        SegmentedTrace(**segmented(blocks=[[0, 1]], block_tokens=[4]))
    with pytest.raises(ValidationError, match="boundary scores"):
        SegmentedTrace(**segmented(boundary_scores=[1.0]))


def annotated(**overrides):
    fields = {
        **segmented(),
        "mementos": ["counted to two", "three"],
        "memento_tokens": [3, 1],
        "reviews": [],
        "annotator_model": "extractive",
        "prompt_version": "none",
        "usage": Usage(),
    }
    return {**fields, **overrides}


def test_annotated_trace_needs_one_nonempty_memento_per_block():
    trace = AnnotatedTrace(**annotated())
    full = trace.to_full_row()
    assert full.sentences == ["One.", " Two.", " Three."]
    assert "".join(full.sentences) == trace.reasoning
    assert trace.to_default_row().response == full.response
    with pytest.raises(ValidationError, match="1 mementos for 2 blocks"):
        AnnotatedTrace(**annotated(mementos=["x"], memento_tokens=[1]))
    with pytest.raises(ValidationError, match="memento 1 is empty"):
        AnnotatedTrace(**annotated(mementos=["x", "  "]))


def test_full_row_checks_response_against_columns():
    row = AnnotatedTrace(**annotated()).to_full_row().model_dump()
    with pytest.raises(ValidationError, match="block_summaries"):
        FullRow(**{**row, "block_summaries": ["other", "three"]})


def test_published_features_equal_the_public_schema():
    string, int64 = datasets.Value("string"), datasets.Value("int64")
    public_default = {"problem": string, "response": string, "domain": string, "source": string, "difficulty": int64}
    public_full = {
        **public_default,
        "sentences": datasets.List(string),
        "blocks": datasets.List(datasets.List(int64)),
        "block_summaries": datasets.List(string),
    }
    assert features(DefaultRow) == datasets.Features(public_default)
    assert features(FullRow) == datasets.Features(public_full)
    assert list(arrow_schema(FullRow).names) == list(public_full)
    assert arrow_schema(DefaultRow).field("difficulty").type == pa.int64()


def test_usage_adds_exactly_and_a_total_is_rounded_once():
    a = Usage(requests=1, prompt_tokens=10, completion_tokens=2, cost_usd=0.1)
    b = Usage(requests=2, prompt_tokens=5, completion_tokens=1, cost_usd=0.2)
    assert (a + b).cost_usd == 0.1 + 0.2 != 0.3
    assert sum_usage([a, b]) == Usage(requests=3, prompt_tokens=15, completion_tokens=3, cost_usd=0.3)
    assert sum_usage([]) == Usage()
    tiny = [Usage(cost_usd=4e-9)] * 3  # each rounds to 0 at 8 decimals; their total does not
    assert sum_usage(tiny).cost_usd == 1e-8
