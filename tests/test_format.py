import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from openmementos.format import (
    BLOCK_END,
    BLOCK_START,
    DELIMITERS,
    SUMMARY_END,
    SUMMARY_START,
    DelimiterInTextError,
    MementoResponse,
    MissingMementoError,
    OutOfOrderDelimiterError,
    TextOutsideBlocksError,
    UnbalancedDelimiterError,
    find_reserved,
    parse_response,
    render_response,
)

text = st.text().filter(lambda t: find_reserved(t) is None)
answers = st.text().filter(lambda t: not any(d in t for d in DELIMITERS))


@given(st.lists(st.tuples(text, text.filter(str.strip)), min_size=1, max_size=6), answers)
def test_parse_inverts_render_for_any_text(pairs, answer):
    blocks = [b for b, _ in pairs]
    mementos = [m for _, m in pairs]
    rendered = render_response(blocks, mementos, answer)
    assert parse_response(rendered) == MementoResponse(blocks, mementos, answer)
    assert render_response(*_fields(parse_response(rendered))) == rendered


def _fields(parsed):
    return parsed.blocks, parsed.mementos, parsed.answer


def test_canonical_layout():
    assert render_response(["a b.", " c"], ["m1", "m2"], "42") == (
        "<think>\n"
        f"{BLOCK_START}a b.{BLOCK_END}\n{SUMMARY_START}m1{SUMMARY_END}\n"
        f"{BLOCK_START} c{BLOCK_END}\n{SUMMARY_START}m2{SUMMARY_END}\n"
        "</think>\n42"
    )


@pytest.mark.parametrize("sep", ["", " ", "\n\n", " \n \t", "\r\n"])
def test_other_tools_whitespace_layouts(sep):
    text = (
        f"{sep}<think>{sep}{BLOCK_START}one{BLOCK_END}{sep}{SUMMARY_START}m{SUMMARY_END}{sep}"
        f"{BLOCK_START}two{BLOCK_END}{sep}{SUMMARY_START}n{SUMMARY_END}{sep}</think>\nThe answer"
    )
    assert parse_response(text) == MementoResponse(["one", "two"], ["m", "n"], "The answer")


def test_round_trip_of_every_published_demo_row(demo_dataset):
    """Every `response` of the published demo file parses back to its blocks, mementos and answer, and
    re-rendering the parsed response is byte-identical."""
    rows = [
        row for path in sorted((demo_dataset / "full").glob("*.parquet")) for row in pq.read_table(path).to_pylist()
    ]
    assert rows
    for row in rows:
        parsed = parse_response(row["response"])
        sentences = row["sentences"]
        assert parsed.blocks == ["".join(sentences[first : last + 1]) for first, last in row["blocks"]]
        assert parsed.mementos == row["block_summaries"]
        assert parsed.answer.strip() and row["response"].endswith(parsed.answer)
        assert render_response(parsed.blocks, parsed.mementos, parsed.answer) == row["response"]


B, BE, S, SE = BLOCK_START, BLOCK_END, SUMMARY_START, SUMMARY_END


@pytest.mark.parametrize(
    ("text", "error", "position"),
    [
        ("no think here", TextOutsideBlocksError, 0),
        (f"<think>\n{B}x{BE}\n{S}m{SE}\n", UnbalancedDelimiterError, "end"),
        (f"<think>{B}x{BE}</think>a", MissingMementoError, 7 + 15 + 1 + 13),
        (f"<think>{B}x{BE}{B}y{BE}{S}m{SE}</think>a", MissingMementoError, 7 + 15 + 1 + 13),
        (f"<think>{B}x{S}m{SE}</think>a", UnbalancedDelimiterError, 7 + 15 + 1),
        (f"<think>{B}x{BE}{S}m{SE}stray{B}y{BE}{S}n{SE}</think>a", TextOutsideBlocksError, 69),
        (f"<think>{BE}x</think>", UnbalancedDelimiterError, 7),
        (f"<think>{S}m{SE}</think>", OutOfOrderDelimiterError, 7),
        ("<think></think>answer", MissingMementoError, 7),
        (f"<think>{B}x{BE}{S}m", UnbalancedDelimiterError, 7 + 15 + 1 + 13 + 17 + 1),
        (f"<think>{B}x<think>{BE}", OutOfOrderDelimiterError, 7 + 15 + 1),
        (f"<think>{B}x{BE}{S}m{SE}</think", UnbalancedDelimiterError, "end"),
    ],
)
def test_malformed_responses_raise_typed_errors_with_position(text, error, position):
    with pytest.raises(error) as caught:
        parse_response(text)
    assert caught.value.position == (len(text) if position == "end" else position)


def test_render_refuses_delimiters_inside_texts():
    with pytest.raises(DelimiterInTextError, match="block 1"):
        render_response(["ok", f"bad {BLOCK_END}"], ["m", "m"], "a")
    with pytest.raises(DelimiterInTextError, match="memento 0"):
        render_response(["ok"], ["</think> oops"], "a")
    with pytest.raises(DelimiterInTextError, match="answer"):
        render_response(["ok"], ["m"], f"{SUMMARY_START}")
    with pytest.raises(ValueError, match="2 blocks but 1 mementos"):
        render_response(["a", "b"], ["m"], "")
