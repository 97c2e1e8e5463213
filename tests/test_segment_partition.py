"""The partition is the true optimum of mean(cut scores) - λ·CV(block tokens) under the size limits."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openmementos.segment.partition import Partition, objective, optimal_partition


def partitions(n: int) -> list[list[tuple[int, int]]]:
    result = []
    for cuts in itertools.product((False, True), repeat=n - 1):
        starts = [0] + [i + 1 for i, cut in enumerate(cuts) if cut]
        ends = [s - 1 for s in starts[1:]] + [n - 1]
        result.append(list(zip(starts, ends, strict=True)))
    return result


def feasible(blocks: list[tuple[int, int]], sizes: list[int], low: int, high: int | None) -> bool:
    tokens = [sum(sizes[a : b + 1]) for a, b in blocks]
    return all(t >= low and (high is None or t <= high) for t in tokens)


def brute_force(sizes: list[int], scores: list[float], lam: float, low: int, high: int | None) -> float | None:
    values = [
        objective(scores, sizes, blocks, lam) for blocks in partitions(len(sizes)) if feasible(blocks, sizes, low, high)
    ]
    return max(values, default=None)


def greedy_baseline(sizes: list[int], scores: list[float], lam: float, low: int) -> float | None:
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
                best[(end, k)] = max(candidates, key=lambda blocks: objective(scores, sizes, blocks, lam))
    finals = [blocks for (end, _), blocks in best.items() if end == n - 1]
    return max((objective(scores, sizes, blocks, lam) for blocks in finals), default=None)


def instances(max_sentences: int) -> st.SearchStrategy[tuple[list[int], list[float]]]:
    return st.integers(1, max_sentences).flatmap(
        lambda n: st.tuples(
            st.lists(st.integers(0, 150), min_size=n, max_size=n),
            st.lists(st.integers(0, 6).map(lambda h: h / 2), min_size=n - 1, max_size=n - 1),
        )
    )


def assert_valid(result: Partition, sizes: list[int], scores: list[float], lam: float) -> None:
    assert result.blocks[0][0] == 0 and result.blocks[-1][1] == len(sizes) - 1
    for (_, last), (first, _) in itertools.pairwise(result.blocks):
        assert first == last + 1
    assert result.block_tokens == [sum(sizes[a : b + 1]) for a, b in result.blocks]
    assert math.isclose(result.objective, objective(scores, sizes, result.blocks, lam), abs_tol=1e-9)


@given(
    instances(14),
    st.sampled_from([0.0, 0.5, 1.0, 3.0]),
    st.sampled_from([0, 60, 200]),
    st.sampled_from([None, None, 250, 400]),
)
@settings(max_examples=200, deadline=None)
def test_equals_brute_force(instance: tuple[list[int], list[float]], lam: float, low: int, high: int | None) -> None:
    sizes, scores = instance
    result = optimal_partition(sizes, scores, lam, low, high)
    total = sum(sizes)
    if total == 0:  # no tokens: one block by definition
        assert result.blocks == [(0, len(sizes) - 1)] and result.feasible
        return
    expected = brute_force(sizes, scores, lam, low, high)
    if expected is None:
        assert result.blocks == [(0, len(sizes) - 1)]
        assert result.feasible == (total < low and (high is None or total <= high))
        return
    assert result.feasible
    assert feasible(result.blocks, sizes, low, high)
    assert_valid(result, sizes, scores, lam)
    assert math.isclose(result.objective, expected, abs_tol=1e-9)


@given(instances(12), st.sampled_from([0.5, 1.0]), st.sampled_from([50, 200]))
@settings(max_examples=150, deadline=None)
def test_never_worse_than_the_published_greedy_dp(
    instance: tuple[list[int], list[float]], lam: float, low: int
) -> None:
    sizes, scores = instance
    greedy = greedy_baseline(sizes, scores, lam, low)
    result = optimal_partition(sizes, scores, lam, low)
    if greedy is not None:
        assert result.objective >= greedy - 1e-12


def test_beats_the_greedy_dp_where_it_is_myopic() -> None:
    # Keeping one partial state per (position, k) drops a prefix that scores worse so far but balances later.
    sizes = [135, 71, 42, 79, 113, 113, 71, 102, 119, 70, 83, 147]
    scores = [1.0, 0.0, 3.0, 2.5, 0.0, 1.0, 2.0, 3.0, 2.5, 2.5, 0.0]
    greedy = greedy_baseline(sizes, scores, 2.0, 60)
    result = optimal_partition(sizes, scores, 2.0, 60)
    assert greedy is not None and result.objective > greedy + 0.05
    assert result.blocks == [(0, 3), (4, 7), (8, 11)]


@pytest.mark.parametrize(
    ("seed", "low", "high"),
    [(3, 300, None), (4, 150, None), (5, 120, None), (6, 150, 450), (7, 200, 700), (8, 100, 300)],
)
def test_large_instance_matches_an_exhaustive_score_dp(seed: int, low: int, high: int | None) -> None:
    """Check 60-sentence instances against the (K, half-point sum) DP, exact but slow, from the issue's hint."""
    rng = __import__("random").Random(seed)
    n = 60
    sizes = [rng.randint(10, 120) for _ in range(n)]
    half = [rng.choice([0, 0, 1, 2, 2, 3, 4, 5, 6]) for _ in range(n - 1)]
    scores = [h / 2 for h in half]
    prefix = list(itertools.accumulate(sizes, initial=0))
    total = prefix[-1]
    # least[k][end][h]: least sum of squared block sizes, k blocks over sentences [0, end), cut half points h.
    least: list[dict[int, dict[int, int]]] = [{}, {end: {0: prefix[end] ** 2} for end in range(1, n + 1)
                                                   if low <= prefix[end] <= (high or total)}]  # fmt: skip
    best = 0.0 if low <= total <= (high or total) else -math.inf
    for k in range(2, total // low + 1):
        level: dict[int, dict[int, int]] = {}
        for start, by_score in least[k - 1].items():
            for end in range(start + 1, n + 1):
                size = prefix[end] - prefix[start]
                if size < low or (high is not None and size > high):
                    continue
                for h, q in by_score.items():
                    h2 = h + half[start - 1]
                    slot = level.setdefault(end, {})
                    if q + size * size < slot.get(h2, math.inf):
                        slot[h2] = q + size * size
        least.append(level)
        for h, q in level.get(n, {}).items():
            best = max(best, h / (2 * (k - 1)) - 0.5 * math.sqrt(k * q - total * total) / total)
    result = optimal_partition(sizes, scores, 0.5, low, high)
    assert math.isclose(result.objective, best, abs_tol=1e-9)
    assert high is None or max(result.block_tokens) <= high


def test_trace_shorter_than_one_block_is_one_block() -> None:
    result = optimal_partition([50, 60, 40], [3.0, 3.0], min_tokens=200)
    assert result.blocks == [(0, 2)] and result.feasible and result.objective == 0.0


def test_single_sentence() -> None:
    assert optimal_partition([500], []).blocks == [(0, 0)]


def test_strong_balanced_cut_wins() -> None:
    sizes = [100] * 10
    scores = [0.0] * 9
    scores[4] = 3.0  # a strong boundary in the middle
    result = optimal_partition(sizes, scores, 0.5, 200)
    assert result.blocks == [(0, 4), (5, 9)]
    assert result.objective == 3.0


def test_max_tokens_is_a_hard_cap() -> None:
    sizes = [100] * 12
    scores = [1.0] * 11
    result = optimal_partition(sizes, scores, 0.5, 200, 300)
    assert result.feasible and all(t <= 300 for t in result.block_tokens)
    assert len(result.blocks) >= 4


def test_cap_below_a_sentence_is_infeasible() -> None:
    result = optimal_partition([100, 900, 100], [3.0, 3.0], 0.5, 50, 500)
    assert not result.feasible and result.blocks == [(0, 2)]


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
