"""Stratified selection: exact quotas, shard-independent decisions, nested limits."""

from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from openmementos.download.sampling import (
    BoundFinder,
    SelectionPlan,
    SelectionRequest,
    StratumCounts,
    allocate,
    apportion,
)

STRATA = [("math", "a", 1)] * 500 + [("math", "b", None)] * 300 + [("code", "c", 2)] * 150 + [("science", "d", 3)] * 50


def plan_for(rows: list, request: SelectionRequest, files: int = 3) -> SelectionPlan:
    """A plan over `rows` (strata) split into `files` files; row keys are f"f{file}#{index}"."""
    keyed = [(f"f{n % files}#{n // files}", stratum) for n, stratum in enumerate(rows)]
    counts = StratumCounts()
    for file in range(files):
        counts.add_file(stratum for key, stratum in keyed if key.startswith(f"f{file}#"))
    quotas, summary = allocate(counts, request)
    finder = BoundFinder(request.seed, quotas, counts.sizes)
    for key, stratum in keyed:
        finder.add(stratum, key)
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
    counts.add_file([("math", "a", 1), None, None])
    assert counts.unclassified == 2 and counts.file_rows == [3]
