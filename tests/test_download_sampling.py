"""Stratified selection: exact quotas, shard-independent decisions, nested limits, and the pre-pass that
plans it, which must give the plan and selection of the row-by-row pre-pass it replaced (kept below as
the oracle, `row_by_row_plan`)."""

import json
import math
from collections import Counter
from fractions import Fraction

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from support.ot3_rows import write_ot3_parquet
from support.rowwise_prepass import row_by_row_plan, row_by_row_selected

from openmementos.download.mapping import ColumnMapping
from openmementos.download.readers import InputFile, Unreadable, iter_rows, local_input
from openmementos.download.sampling import (
    BoundFinder,
    SelectionPlan,
    SelectionRequest,
    StratumCounts,
    allocate,
    apportion,
    row_hash,
)
from openmementos.download.stage import make_plan, row_key
from openmementos.download.strata import file_strata

STRATA = [("math", "a", 1)] * 500 + [("math", "b", None)] * 300 + [("code", "c", 2)] * 150 + [("science", "d", 3)] * 50


def plan_for(rows: list, request: SelectionRequest, files: int = 3) -> SelectionPlan:
    """A plan over `rows` (strata) split into `files` files; row keys are f"f{file}#{index}"."""
    keyed = [(f"f{n % files}#{n // files}", stratum) for n, stratum in enumerate(rows)]
    counts = StratumCounts()
    for file in range(files):
        counts.add_file(Counter(stratum for key, stratum in keyed if key.startswith(f"f{file}#")).items())
    quotas, summary = allocate(counts, request)
    finder = BoundFinder(request.seed, quotas, counts.sizes)
    for key, stratum in keyed:
        finder.add(stratum, [key])
    return SelectionPlan(request.seed, finder.bounds(), quotas, counts.sizes, (), summary)


def selected(rows: list, plan: SelectionPlan, files: int = 3) -> dict[str, tuple]:
    """The selected rows' keys and strata."""
    keys = [(f"f{n % files}#{n // files}", stratum) for n, stratum in enumerate(rows)]
    return {key: stratum for key, stratum in keys if stratum is None or plan.selects(stratum, key)}


@given(st.integers(0, 10_000), st.lists(st.integers(0, 1000), min_size=1, max_size=12))
def test_apportion_adds_up_and_stays_within_one_of_the_exact_share(total, weights):
    shares = apportion(total, {i: Fraction(w) for i, w in enumerate(weights)})
    if sum(weights) == 0:
        assert set(shares.values()) == {0}
        return
    assert sum(shares.values()) == total
    for i, w in enumerate(weights):
        assert abs(shares[i] - Fraction(total * w, sum(weights))) < 1


def test_limit_and_ratios_give_exact_domain_and_stratum_counts():
    request = SelectionRequest(seed=7, limit=200, ratios=(("code", Fraction("0.25")), ("math", Fraction("0.75"))))
    plan = plan_for(STRATA, request)
    chosen = Counter(selected(STRATA, plan).values())
    assert plan.summary["drawn"] == {"code": 50, "math": 150}
    assert chosen == {("math", "a", 1): 94, ("math", "b", None): 56, ("code", "c", 2): 50}  # 150 split 5:3
    assert plan.summary["not_selected"] == 1000 - 200


def test_ratios_without_limit_take_the_largest_subset_that_fits():
    plan = plan_for(STRATA, SelectionRequest(ratios=(("code", Fraction(1)), ("science", Fraction(1)))))
    assert plan.summary["drawn"] == {"code": 50, "science": 50}  # science has only 50


def test_a_domain_short_of_its_target_is_reported():
    request = SelectionRequest(limit=400, ratios=(("math", Fraction(1, 2)), ("science", Fraction(1, 2))))
    plan = plan_for(STRATA, request)
    assert plan.summary["drawn"] == {"math": 200, "science": 50}
    assert plan.summary["shortfall"] == {"science": 150}


def test_domains_alone_keep_whole_domains_without_hashing():
    plan = plan_for(STRATA, SelectionRequest(domains=("code", "science")))
    assert len(selected(STRATA, plan)) == 200
    assert set(plan.bounds.values()) == {0, 1 << 64}


def test_unknown_domain_and_mismatched_options_are_explained():
    with pytest.raises(ValueError, match=r"no rows of domain maths; domains present: code \(150\)"):
        plan_for(STRATA, SelectionRequest(domains=("maths",)))
    with pytest.raises(ValueError, match="differ"):
        plan_for(STRATA, SelectionRequest(domains=("math",), ratios=(("code", Fraction(1)),)))


def test_selection_is_seeded_nested_and_independent_of_file_layout():
    small = set(selected(STRATA, plan_for(STRATA, SelectionRequest(seed=1, limit=100))))
    large = set(selected(STRATA, plan_for(STRATA, SelectionRequest(seed=1, limit=300))))
    other_seed = set(selected(STRATA, plan_for(STRATA, SelectionRequest(seed=2, limit=100))))
    assert len(small) == 100 and len(large) == 300 and small < large
    assert small != other_seed
    # the plan is a pure function of the rows, whichever process reads which file
    again = plan_for(list(STRATA), SelectionRequest(seed=1, limit=100))
    assert set(selected(STRATA, again)) == small


def test_plan_round_trips_through_json():
    plan = plan_for(STRATA, SelectionRequest(seed=3, limit=10, ratios=(("math", Fraction(1)),)))
    plan = SelectionPlan(plan.seed, plan.bounds, plan.quotas, plan.sizes, (1, 2), {"request": {"seed": 3}})
    again = SelectionPlan.from_json(plan.as_json())
    assert again == plan and again.as_json() == plan.as_json()


def test_rows_without_a_domain_are_counted_apart():
    counts = StratumCounts()
    counts.add_file([(("math", "a", 1), 1), (None, 2)])
    assert counts.unclassified == 2 and counts.file_rows == [3]


@pytest.mark.parametrize("quota", [1, 7, 900, 6000, 11_999])
def test_bounds_are_one_above_the_quota_th_smallest_hash_however_the_rows_arrive(quota):
    """Pruning in bulk (rows arrive in batches, more than 1.5 quotas + PRUNE_SLACK of them) loses nothing."""
    stratum = ("math", "a", 1)
    keys = [f"f#{index}" for index in range(12_000)]
    finder = BoundFinder(5, {stratum: quota}, {stratum: len(keys)})
    for start in range(0, len(keys), 1000):
        finder.add(stratum, keys[start : start + 1000])
        finder.add(("code", "b", 2), keys[start : start + 1000])  # not a stratum of the plan: ignored
    assert finder.bounds() == {stratum: sorted(row_hash(5, key) for key in keys)[quota - 1] + 1}


# --------------------------------------------------------------------------- the pre-pass, against the row-by-row one


def new_selected(plan: SelectionPlan, files: list[InputFile], mapping: ColumnMapping) -> list[str]:
    chosen = []
    for file in files:
        for index, row in iter_rows(file, mapping.metadata_columns()):
            stratum = None if isinstance(row, Unreadable) else mapping.stratum(row)
            if stratum is None or plan.selects(stratum, row_key(file, index)):
                chosen.append(row_key(file, index))
    return chosen


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> list[InputFile]:
    """Parquet shards of generated OpenThoughts3 rows, plus files of every format with awkward metadata."""
    root = tmp_path_factory.mktemp("corpus")
    write_ot3_parquet(root / "ot3", 1500, 3, row_group_size=128)
    odd = [
        {
            "domain": ["math", "code", None, "bio"][i % 4],
            "source": i % 3,
            "difficulty": [0.0, -0.0, math.nan, 1.5, None][i % 5],
        }
        for i in range(300)
    ]
    (root / "odd").mkdir()
    pq.write_table(pa.Table.from_pylist(odd), root / "odd" / "floats.parquet", row_group_size=64)
    no_difficulty = [{"domain": "science" if i % 2 else "math", "source": i % 2 == 0} for i in range(90)]
    pq.write_table(pa.Table.from_pylist(no_difficulty), root / "odd" / "bools.parquet")
    lines = []
    for i in range(120):
        if i % 17 == 5:
            lines.append("{not json")
        elif i % 23 == 7:
            lines.append("")
        elif i % 29 == 3:
            lines.append("[1, 2]")
        else:
            row = {"domain": "code" if i % 3 else 7, "source": f"s{i % 4}", "difficulty": {"level": i % 2}}
            lines.append(json.dumps(row))
    (root / "odd" / "rows.jsonl").write_text("\n".join(lines) + "\n")
    arrow_rows = [{"domain": "math", "source": f"a{i % 5}", "difficulty": i % 3} for i in range(200)]
    datasets.Dataset.from_list(arrow_rows).save_to_disk(str(root / "arrow"))
    return (
        local_input(root / "ot3", "train") + local_input(root / "odd", "train") + local_input(root / "arrow", "train")
    )


MAPPINGS = {
    "columns": ColumnMapping(messages="conversations"),
    "fixed source": ColumnMapping(messages="conversations", source=None, fixed={"source": "all"}),
    "no column": ColumnMapping(
        messages="conversations", domain=None, source=None, difficulty=None, fixed={"domain": "math"}
    ),
}
RATIOS = (("math", Fraction(5)), ("code", Fraction(3)), ("science", Fraction(2)))
REQUESTS = {
    "ratios": SelectionRequest(seed=3, limit=600, ratios=RATIOS),
    "domains": SelectionRequest(seed=1, domains=("math", "code")),
    "limit": SelectionRequest(seed=9, limit=150),
    "all": SelectionRequest(seed=4),
}
CASES = [(m, r) for m in MAPPINGS for r in REQUESTS if m != "no column" or r in ("limit", "all")]


@pytest.mark.parametrize(("mapping", "request_"), CASES, ids=[f"{m}-{r}" for m, r in CASES])
def test_the_polars_pre_pass_gives_the_row_by_row_plan_and_selection(corpus, mapping, request_):
    mapping, request_ = MAPPINGS[mapping], REQUESTS[request_]
    plan = make_plan(corpus, mapping, request_)
    expected = row_by_row_plan(corpus, mapping, request_)
    assert plan == expected  # sizes, file rows, quotas, bounds and the summary
    assert new_selected(plan, corpus, mapping) == row_by_row_selected(expected, corpus, mapping)


def test_awkward_values_fall_in_the_strata_the_main_pass_puts_them_in(corpus):
    mapping = MAPPINGS["columns"]
    for file in corpus:
        by_row = {}
        for index, row in iter_rows(file, mapping.metadata_columns()):
            by_row[index] = None if isinstance(row, Unreadable) else mapping.stratum(row)
        grouped = {
            index: group.stratum for group in file_strata(file, mapping, indices=True) for index in group.indices
        }
        assert grouped == by_row, file.label
    floats = next(file for file in corpus if file.label == "floats.parquet")
    difficulties = {group.stratum[2] for group in file_strata(floats, mapping) if group.stratum}
    assert difficulties == {"0.0", "-0.0", "NaN", "1.5", None}  # 0.0 and -0.0 apart, as stratum_value keeps them
