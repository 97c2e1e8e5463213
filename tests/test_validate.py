"""validate: one planted defect of each kind is caught with its reason; good traces pass untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.annotated_traces import make_trace, write_shards, write_stage
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.runtime.manifest import Manifest, StageError, iter_stage, read_manifest
from openmementos.runtime.shardio import read_quarantine
from openmementos.schema import AnnotatedTrace, JudgeRound, MementoReview
from openmementos.tokens import count_tokens
from openmementos.validate import RULES, ValidateRequest, ValidationRules, build_report, check_row, run_validate


def validate(in_dir: Path, out: Path, **rules: object) -> Manifest:
    return run_validate(ValidateRequest(in_dir=in_dir, out_dir=out, **rules)).manifest


def _row(number: int, **changes) -> dict:
    return {**make_trace(number).model_dump(), **changes}


def _with_memento(number: int, index: int, text: str) -> dict:
    row = make_trace(number).model_dump()
    row["mementos"][index] = text
    row["memento_tokens"][index] = count_tokens([text])[0]
    return row


def _planted() -> dict[str, dict]:
    """Rule -> a row that breaks it (and, where unavoidable, rules that follow from it)."""
    spans = _row(101)
    spans["reasoning"] += "a tail no sentence covers"
    blocks = _row(102)
    blocks["blocks"][1][0] += 1  # a gap between block 0 and block 1
    counts = _row(103)
    counts["memento_tokens"].append(7)
    judged = _row(112)
    judged["reviews"] = [
        MementoReview(
            rounds=[JudgeRound(score=6.0, feedback="missing formula"), JudgeRound(score=7.5, feedback="")]
        ).model_dump()
        for _ in judged["mementos"]
    ]
    return {
        "spans_lossless": spans,
        "blocks_contiguous": blocks,
        "counts_consistent": counts,
        "source_reserved": _row(105, problem="Explain what <|block_start|> means."),
        "answer_empty": _row(106, answer="  \n"),
        "memento_empty": _with_memento(107, 0, "   "),
        "memento_reserved": _with_memento(108, 1, "x = 1 <|summary_end|> and more"),
        "memento_placeholder": _with_memento(109, 0, "[summary unavailable]"),
        "memento_ascii": _with_memento(110, 0, "x_0 ≥ 3, so x_0 = 3."),
        "memento_ratio": _with_memento(111, 0, " ".join(["a long restatement of everything"] * 120)),
        "judge_score": judged,
    }


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, dict[str, dict], list[AnnotatedTrace]]:
    good = [make_trace(n, judged=n % 2 == 0) for n in range(6)]
    defects = _planted()
    rows = [*good, *defects.values()]
    in_dir = tmp_path / "annotate"
    # Shard 2 is a foreign shard lacking a column; shard 1 repeats a trace of shard 0.
    write_shards(in_dir, [rows[: len(rows) // 2], [*rows[len(rows) // 2 :], good[0]], [make_trace(50)]])
    foreign = in_dir / "part-00002.parquet"
    pq.write_table(pq.read_table(foreign).drop_columns(["usage"]), foreign)
    return in_dir, defects, good


def test_each_planted_defect_is_quarantined_with_its_reason(planted, tmp_path):
    in_dir, defects, good = planted
    out = tmp_path / "validate"
    manifest = validate(in_dir, out, require_ascii=True)

    passed = list(iter_stage(out, AnnotatedTrace))
    assert [t.id for t in passed] == [t.id for t in good]
    assert passed == good  # passing traces are written unchanged

    quarantined = {}
    for record in read_quarantine(out):
        quarantined.setdefault(record.id, []).append(record)
    for rule, row in defects.items():
        (record,) = quarantined[row["id"]]
        assert rule in record.reason.split(","), (rule, record.reason, record.detail)
        assert f"{rule}: " in record.detail
        assert json.loads(record.record)["id"] == row["id"]  # the whole row is kept for repair

    # A memento holding a delimiter also makes the response ambiguous: both reasons are recorded.
    assert quarantined["trace-0108"][0].reason == "memento_reserved,response_roundtrip"
    assert "contains '<|summary_end|>'" in quarantined["trace-0108"][0].detail
    judge = quarantined["trace-0112"][0].detail
    assert judge.startswith("judge_score: memento 0 scored 7.5 after 2 judge round(s);") and judge.endswith(
        "(need >= 8)"
    )
    assert "memento 0 has '≥' (U+2265)" in quarantined["trace-0110"][0].detail
    duplicate, foreign = quarantined["trace-0000"], quarantined["trace-0050"]
    assert [r.reason for r in duplicate] == ["duplicate_id"]
    assert [r.reason for r in foreign] == ["schema"] and "usage: Field required" in foreign[0].detail

    report = build_report(manifest, out)
    counts = {r.rule: r.failures for r in report.rules}
    assert set(counts) == set(RULES)
    assert all(counts[rule] >= 1 for rule in RULES), counts
    assert counts["response_roundtrip"] == 1  # only the memento delimiter reaches the response
    assert (report.traces, report.passed, report.quarantined) == (len(good) + len(defects) + 2, len(good), 13)


def test_ascii_is_only_required_when_asked():
    row = _with_memento(1, 0, "x_0 ≥ 3")
    assert check_row(row, ValidationRules())[1] == []
    assert [f.rule for f in check_row(row, ValidationRules(require_ascii=True))[1]] == ["memento_ascii"]


def test_ratio_bounds_are_configurable():
    row = make_trace(3).model_dump()
    ratio = row["memento_tokens"][0] / row["block_tokens"][0]
    assert check_row(row, ValidationRules(min_ratio=ratio * 0.9))[1] == []
    (failure,) = check_row(row, ValidationRules(min_ratio=ratio * 1.1))[1]
    assert failure.rule == "memento_ratio" and "memento 0 has" in failure.message
    with pytest.raises(ValueError, match="above max_ratio"):
        ValidationRules(min_ratio=0.5, max_ratio=0.1)


def test_the_judge_score_is_that_of_the_memento_kept():
    def judged(scores: list[float], kept: int) -> dict:
        rounds = [JudgeRound(score=score, feedback="") for score in scores]
        review = MementoReview(rounds=rounds, kept=kept).model_dump()
        return _row(4, reviews=[review for _ in make_trace(4).mementos])

    # The first version scored 8.5 and was kept over a worse rewrite: it is what gets published.
    assert check_row(judged([8.5, 7.0], kept=0), ValidationRules())[1] == []
    (failure,) = check_row(judged([7.5, 8.5], kept=0), ValidationRules())[1]
    assert failure.rule == "judge_score" and failure.message.startswith("memento 0 scored 7.5 after 2 judge round(s)")
    (failure,) = check_row(judged([9.0, 9.5], kept=2), ValidationRules())[1]
    assert failure.rule == "judge_score" and "keeps round 2, but it was judged in 2 round(s)" in failure.message


def test_validate_resumes_and_refuses_other_rules(planted, tmp_path):
    in_dir, _, _ = planted
    out = tmp_path / "validate"
    first = validate(in_dir, out)
    again = validate(in_dir, out)
    assert again.done == first.done  # nothing redone: the done markers are the same
    with pytest.raises(StageError, match="other options"):
        validate(in_dir, out, min_judge_score=5)


def test_cli_prints_the_table_writes_the_report_and_fails_under_strict(planted, tmp_path):
    in_dir, defects, good = planted
    report = tmp_path / "report.json"
    runner = CliRunner()
    args = ["validate", str(in_dir), str(tmp_path / "validate"), "--report", str(report), "--require-ascii"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "memento_placeholder" in result.output and "quarantined" in result.output
    data = json.loads(report.read_text())
    assert data["passed"] == len(good) and data["quarantined"] == len(defects) + 2
    assert {r["rule"]: r["failures"] for r in data["rules"]}["judge_score"] == 1

    strict = runner.invoke(app, [*args, "--strict"])
    assert strict.exit_code == 1
    clean = tmp_path / "clean"
    write_stage(clean, [make_trace(n) for n in range(3)])
    ok = runner.invoke(app, ["validate", str(clean), str(tmp_path / "clean-out"), "--strict"])
    assert ok.exit_code == 0, ok.output
    assert "all passed" in ok.output
    assert read_manifest(tmp_path / "clean-out").stage == "validate"


def test_incomplete_input_is_refused(tmp_path):
    in_dir = tmp_path / "annotate"
    write_stage(in_dir, [make_trace(n) for n in range(4)])
    (in_dir / ".done" / "part-00001.json").unlink()
    with pytest.raises(StageError, match="incomplete"):
        validate(in_dir, tmp_path / "out")
    with pytest.raises(StageError, match="new folder"):
        validate(in_dir, in_dir)
