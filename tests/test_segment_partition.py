"""The partition is the true optimum of J = sum(cut scores) / K - λ·CV(block tokens) (or / (K - 1)) under the limits."""

from __future__ import annotations

import itertools
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmementos.segment.partition import (
    Objective,
    Partition,
    best_per_block_count,
    evaluate,
    objective_value,
    optimal_partition,
)

OBJECTIVES = list(Objective)


def reference_value(sizes: list[int], scores: list[float], cuts: tuple[int, ...], lam: float, objective: str) -> float:
    """J written out from SPEC 4.4, independently of the package: cuts are the sentences that start a block."""
    bounds = [0, *cuts, len(sizes)]
    blocks = [sum(sizes[a:b]) for a, b in itertools.pairwise(bounds)]
    k = len(blocks)
    if k == 1:
        return 0.0
    cut_sum = sum(scores[c - 1] for c in cuts)
    mean = sum(blocks) / k
    cv = math.sqrt(sum((t - mean) ** 2 for t in blocks) / k) / mean
    return cut_sum / (k if objective == "published" else k - 1) - lam * cv


def brute_force(
    sizes: list[int], scores: list[float], lam: float, low: int, high: int | None, objective: str, k: int | None = None
) -> float | None:
    """The best J over every partition (2^(n-1) of them) whose blocks fit the limits, or None."""
    n = len(sizes)
    best = None
    for chosen in itertools.product((False, True), repeat=n - 1):
        cuts = tuple(i + 1 for i, cut in enumerate(chosen) if cut)
        if k is not None and len(cuts) + 1 != k:
            continue
        bounds = [0, *cuts, n]
        blocks = [sum(sizes[a:b]) for a, b in itertools.pairwise(bounds)]
        if any(t < low or (high is not None and t > high) for t in blocks):
            continue
        value = reference_value(sizes, scores, cuts, lam, objective)
        best = value if best is None else max(best, value)
    return best


def greedy_baseline(sizes: list[int], scores: list[float], lam: float, low: int, objective: Objective) -> float | None:
    """The published heuristic: one partial partition kept per (end position, blocks so far), compared by
    the objective of the partial partition; the answer is the best full partition over all block counts."""
    n = len(sizes)
    best: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for end in range(n):
        if sum(sizes[: end + 1]) >= low:
            best[(end, 1)] = [(0, end)]
    for k in range(2, n + 1):
        for end in range(n):
            candidates = []
            for previous in range(end):
                prefix = best.get((previous, k - 1))
                if prefix is None or sum(sizes[previous + 1 : end + 1]) < low:
                    continue
                candidates.append([*prefix, (previous + 1, end)])
            if candidates:
                best[(end, k)] = max(candidates, key=lambda b: objective_value(scores, sizes, b, lam, objective))
    finals = [blocks for (end, _), blocks in best.items() if end == n - 1]
    return max((objective_value(scores, sizes, blocks, lam, objective) for blocks in finals), default=None)


def instances(max_sentences: int) -> st.SearchStrategy[tuple[list[int], list[float]]]:
    """Random sizes and half-point scores (the two-pass LLM scorer averages into halves)."""
    return st.integers(1, max_sentences).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 150), min_size=n, max_size=n),
            st.lists(st.integers(0, 6).map(lambda h: h / 2), min_size=n - 1, max_size=n - 1),
        )
    )


def assert_valid(result: Partition, sizes: list[int], scores: list[float], lam: float, objective: Objective) -> None:
    assert result.blocks[0][0] == 0 and result.blocks[-1][1] == len(sizes) - 1
    for (_, last), (first, _) in itertools.pairwise(result.blocks):
        assert first == last + 1
    assert result.block_tokens == [sum(sizes[a : b + 1]) for a, b in result.blocks]
    cuts = tuple(first for first, _ in result.blocks[1:])
    assert math.isclose(result.objective, reference_value(sizes, scores, cuts, lam, objective), abs_tol=1e-9)
    parts = evaluate(scores, sizes, result.blocks, lam, objective)
    assert math.isclose(parts.objective, parts.mean_cut - lam * parts.cv, abs_tol=1e-12)


@given(
    instances(14),
    st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    st.sampled_from([0, 60, 200]),
    st.sampled_from([None, None, 250, 400]),
    st.sampled_from(OBJECTIVES),
)
@settings(max_examples=250, deadline=None)
def test_equals_brute_force(
    instance: tuple[list[int], list[float]], lam: float, low: int, high: int | None, objective: Objective
) -> None:
    sizes, scores = instance
    result = optimal_partition(sizes, scores, lam, low, high, objective)
    total = sum(sizes)
    if total == 0:  # no tokens: one block by definition
        assert result.blocks == [(0, len(sizes) - 1)] and result.feasible
        return
    expected = brute_force(sizes, scores, lam, low, high, objective)
    if expected is None:  # nothing fits: the whole trace, flagged infeasible unless it is a short trace
        assert result.blocks == [(0, len(sizes) - 1)]
        assert result.feasible == (total < low and (high is None or total <= high))
        return
    assert result.feasible
    assert all(t >= low and (high is None or t <= high) for t in result.block_tokens)
    assert_valid(result, sizes, scores, lam, objective)
    assert math.isclose(result.objective, expected, abs_tol=1e-9)


@given(instances(11), st.sampled_from([0.5, 1.0]), st.sampled_from([0, 120]), st.sampled_from(OBJECTIVES))
@settings(max_examples=80, deadline=None)
def test_best_per_block_count_equals_brute_force(
    instance: tuple[list[int], list[float]], lam: float, low: int, objective: Objective
) -> None:
    sizes, scores = instance
    if sum(sizes) == 0:
        return
    ks = range(1, len(sizes) + 2)
    for k, result in best_per_block_count(sizes, scores, ks, lam, low, None, objective).items():
        expected = brute_force(sizes, scores, lam, low, None, objective, k)
        if expected is None:
            assert result is None
        else:
            assert result is not None and len(result.blocks) == k
            assert_valid(result, sizes, scores, lam, objective)
            assert math.isclose(result.objective, expected, abs_tol=1e-9)


@given(instances(12), st.sampled_from([0.5, 1.0]), st.sampled_from([50, 200]), st.sampled_from(OBJECTIVES))
@settings(max_examples=120, deadline=None)
def test_never_worse_than_the_published_greedy_dp(
    instance: tuple[list[int], list[float]], lam: float, low: int, objective: Objective
) -> None:
    sizes, scores = instance
    greedy = greedy_baseline(sizes, scores, lam, low, objective)
    result = optimal_partition(sizes, scores, lam, low, objective=objective)
    if greedy is not None:
        assert result.objective >= greedy - 1e-12


def test_beats_the_greedy_dp_where_it_is_myopic() -> None:
    # Keeping one partial state per (position, k) drops a prefix that scores worse so far but balances later.
    sizes = [135, 71, 42, 79, 113, 113, 71, 102, 119, 70, 83, 147]
    scores = [1.0, 0.0, 3.0, 2.5, 0.0, 1.0, 2.0, 3.0, 2.5, 2.5, 0.0]
    greedy = greedy_baseline(sizes, scores, 2.0, 60, Objective.per_cut)
    result = optimal_partition(sizes, scores, 2.0, 60, objective=Objective.per_cut)
    assert greedy is not None and result.objective > greedy + 0.05
    assert result.blocks == [(0, 3), (4, 7), (8, 11)]


def exhaustive_score_dp(
    sizes: list[int], half: list[int], lam: float, low: int, high: int | None, objective: Objective
) -> float:
    """Exact by another route: the least sum of squared sizes for every (K, half-point sum)."""
    n = len(sizes)
    prefix = list(itertools.accumulate(sizes, initial=0))
    total = prefix[-1]
    cap = high or total
    # least[end][h]: least sum of squared block sizes of k blocks over sentences [0, end) with cut half points h.
    least: dict[int, dict[int, int]] = {
        end: {0: prefix[end] ** 2} for end in range(1, n + 1) if low <= prefix[end] <= cap
    }
    best = 0.0 if low <= total <= cap else -math.inf
    for k in range(2, total // max(low, 1) + 1):
        level: dict[int, dict[int, int]] = {}
        for start, by_score in least.items():
            for end in range(start + 1, n + 1):
                size = prefix[end] - prefix[start]
                if size < low or size > cap:
                    continue
                slot = level.setdefault(end, {})
                for h, q in by_score.items():
                    h2 = h + half[start - 1]
                    if q + size * size < slot.get(h2, math.inf):
                        slot[h2] = q + size * size
        least = level
        for h, q in level.get(n, {}).items():
            best = max(best, h / (2 * objective.divisor(k)) - lam * math.sqrt(max(k * q - total * total, 0)) / total)
    return best


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize(
    ("seed", "low", "high"),
    [(3, 300, None), (4, 150, None), (5, 120, None), (6, 150, 450), (7, 200, 700), (8, 100, 300)],
)
def test_large_instance_matches_an_exhaustive_score_dp(
    seed: int, low: int, high: int | None, objective: Objective
) -> None:
    """Check 60-sentence instances against the (K, half-point sum) DP: exact, but too slow to use."""
    rng = random.Random(seed)
    n = 60
    sizes = [rng.randint(10, 120) for _ in range(n)]
    half = [rng.choice([0, 0, 1, 2, 2, 3, 4, 5, 6]) for _ in range(n - 1)]
    result = optimal_partition(sizes, [h / 2 for h in half], 0.5, low, high, objective)
    assert math.isclose(result.objective, exhaustive_score_dp(sizes, half, 0.5, low, high, objective), abs_tol=1e-9)
    assert high is None or max(result.block_tokens) <= high


def test_published_objective_makes_every_block_earn_its_place() -> None:
    # Strong boundaries every 200 tokens: the published J grows with K (3 (K-1) / K), the per-cut one does not.
    sizes = [100] * 24
    scores = [3.0 if i % 2 else 0.0 for i in range(23)]
    published = optimal_partition(sizes, scores, 0.5, 200)
    assert len(published.blocks) == 12 and math.isclose(published.objective, 3 * 11 / 12)
    per_cut = optimal_partition(sizes, scores, 0.5, 200, objective=Objective.per_cut)
    assert math.isclose(per_cut.objective, 3.0) and per_cut.cv == 0.0  # any balanced cut set scores 3: K = 2 first


def test_one_block_scores_zero_and_wins_when_every_cut_is_poor() -> None:
    sizes = [150] * 8
    result = optimal_partition(sizes, [0.0] * 7, 0.5, 200)
    assert result.blocks == [(0, 7)] and result.objective == 0.0 and result.feasible
    assert evaluate([0.0] * 7, sizes, [(0, 7)], 0.5).objective == 0.0


def test_trace_shorter_than_one_block_is_one_block() -> None:
    result = optimal_partition([50, 60, 40], [3.0, 3.0], min_tokens=200)
    assert result.blocks == [(0, 2)] and result.feasible and result.objective == 0.0


def test_single_sentence() -> None:
    assert optimal_partition([500], []).blocks == [(0, 0)]


def test_max_tokens_is_a_hard_cap() -> None:
    sizes = [100] * 12
    scores = [1.0] * 11
    for objective in OBJECTIVES:
        result = optimal_partition(sizes, scores, 0.5, 200, 300, objective)
        assert result.feasible and all(t <= 300 for t in result.block_tokens)
        assert len(result.blocks) >= 4


def test_nothing_feasible_is_the_whole_trace_flagged() -> None:
    result = optimal_partition([100, 900, 100], [3.0, 3.0], 0.5, 50, 500)
    assert not result.feasible and result.blocks == [(0, 2)] and result.block_tokens == [1100]
    assert best_per_block_count([100, 900, 100], [3.0, 3.0], [1, 2, 3], 0.5, 50, 500) == {1: None, 2: None, 3: None}


@pytest.mark.parametrize(
    ("sizes", "scores", "message"),
    [
        ([], [], "no sentences"),
        ([1, 2], [], "boundary scores"),
        ([1, 2], [0.3], "multiples of 0.5"),
        ([1, 2], [3.5], "multiples of 0.5"),
        ([1, -2], [1.0], "non-negative"),
    ],
)
def test_rejects_bad_input(sizes: list[int], scores: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        optimal_partition(sizes, scores)
