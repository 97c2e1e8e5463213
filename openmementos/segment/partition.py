"""The optimal partition of a trace's sentences into blocks.

Objective (SPEC 4.4), over partitions of the sentences into K contiguous blocks with cut scores
s_1 … s_{K-1} (the score of the boundary before each block but the first):

    published (default):  J = (s_1 + … + s_{K-1}) / K      - λ · CV(block tokens)
    per-cut:              J = (s_1 + … + s_{K-1}) / (K - 1) - λ · CV(block tokens)

CV is the population std / mean of the block token counts; K = 1 scores 0; every block holds at least
`min_tokens` (and at most `max_tokens`, when given) tokens. `published` is what the MEMENTO code
computes: the mean runs over all K blocks, the first counting as a cut of 0, so each extra block must
earn its place and the optimum has many blocks (the published data: ~9 per trace). `per-cut` averages
over the cuts only: one strong cut near the middle scores ~3 and the optimum is almost always 2 blocks.
`optimal_partition` returns a partition with the largest J: the true optimum, not a heuristic.

Why it is exact. Fix K; write H for the sum of the cut scores in half points and Q for the sum of
squared block sizes (T = total tokens, d = K or K - 1). Then

    J_K(H, Q) = H / (2d) - (λ / T) · sqrt(K·Q - T²)

is linear in H and convex in Q, so it is convex in (H, Q). A convex function's maximum over a finite
set of points lies on a vertex of their convex hull, and since J_K grows with H and falls with Q, on
the hull's upper-left chain: points that maximise the *linear* score `H - μ·Q` for some μ >= 0. For one
μ that maximum is an ordinary DP over (blocks so far, sentence position) — no score dimension — and one
DP pass gives it for every K at once. So we walk each K's chain the way one traces a convex hull with
a linear oracle (probe the slope of a chord; a new point splits the chord, none proves it an edge), and
skip every stretch of chain whose best possible J (the value at the corner of the triangle that
encloses it, J being convex) cannot beat the best partition found so far. Probes use integer weights,
so every comparison is exact (float64 holds these integers exactly).

Why it is fast: what cannot beat the best partition known is cut away, by bounds that are exact
consequences of J. The first partition is the best of one or two blocks and of "balanced" partitions
that snap K evenly spaced cuts to a strong nearby boundary, for many K. Then (b = the best J so far):
a K whose best K - 1 boundary scores give a cut term <= b is dropped; a boundary too weak to be a cut of
any better partition is dropped; and since CV < (cut term - b) / λ in a better partition, while one
block of size B alone forces CV >= |B - T/K| / (T/K · sqrt(K - 1)), blocks far from T/K are dropped
too: each DP level only looks back over the cuts that keep its block within the largest size a better
partition of some K >= level may have. As the walk goes on, b rises and the cut terms the open gaps
allow fall, so the windows narrow further; probes stop at the last K that can still win.
On the public example trace (274 sentences, 12K tokens) a solve takes a few ms: most of it is the
~7 probes of up to 44 levels each, numpy calls on (position x window) arrays.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

MAX_HALF_POINTS = 6  # scores are 0..3 in half points
BALANCED_KS = 48  # block counts tried by the balanced seed
SNAP_REACH = 12  # boundaries on each side of a balanced seed's target that it may snap to


class Objective(StrEnum):
    """How the cut scores are averaged (see the module docstring)."""

    published = "published"  # sum of cuts / K: the first block counts as a cut of 0 (the MEMENTO code)
    per_cut = "per-cut"  # sum of cuts / (K - 1): the mean over the cuts only; favours ~2 blocks

    def divisor(self, blocks: int) -> int:
        """What the sum of the cut scores of a `blocks`-block partition (>= 2) is divided by."""
        return blocks if self is Objective.published else blocks - 1


@dataclass(frozen=True)
class Partition:
    """Blocks as inclusive `(first, last)` sentence ranges, with the objective's parts.

    `mean_cut` is the objective's cut term (the sum of the cut scores over K or K - 1).
    """

    blocks: list[tuple[int, int]]
    block_tokens: list[int]
    objective: float
    mean_cut: float
    cv: float
    feasible: bool = True  # False: no partition satisfies the size limits; the trace is one block


def evaluate(
    scores: Sequence[float],
    sizes: Sequence[int],
    blocks: Sequence[tuple[int, int]],
    lam: float,
    objective: Objective = Objective.published,
) -> Partition:
    """A given partition with J and its parts (for tests and `explain`; the solver computes them incrementally)."""
    block_tokens = [sum(sizes[first : last + 1]) for first, last in blocks]
    k = len(blocks)
    if k == 1:
        return Partition(list(blocks), block_tokens, 0.0, 0.0, 0.0)
    mean = sum(block_tokens) / k
    cv = math.sqrt(sum((t - mean) ** 2 for t in block_tokens) / k) / mean if mean else 0.0
    mean_cut = sum(scores[first - 1] for first, _ in blocks[1:]) / objective.divisor(k)
    return Partition(list(blocks), block_tokens, mean_cut - lam * cv, mean_cut, cv)


def objective_value(
    scores: Sequence[float],
    sizes: Sequence[int],
    blocks: Sequence[tuple[int, int]],
    lam: float,
    objective: Objective = Objective.published,
) -> float:
    """J of a given partition."""
    return evaluate(scores, sizes, blocks, lam, objective).objective


def optimal_partition(
    sizes: Sequence[int],
    scores: Sequence[float],
    lam: float = 0.5,
    min_tokens: int = 200,
    max_tokens: int | None = None,
    objective: Objective = Objective.published,
) -> Partition:
    """The partition of sentences (token `sizes`) that maximises J, given boundary `scores` (0-3, half points).

    `scores[i]` is the score of the boundary after sentence i. When no partition satisfies the size
    limits the result is the whole trace as one block with `feasible=False`, except that a trace whose
    total is below `min_tokens` (and within `max_tokens`) is simply one feasible block.
    """
    problem = _Problem.of(sizes, scores, lam, min_tokens, max_tokens, objective)
    if problem.total == 0:  # no tokens at all: nothing to balance, one block
        return Partition([(0, len(sizes) - 1)], [0], 0.0, 0.0, 0.0)
    best = problem.solve()
    if best is None:
        total, cap = problem.total, problem.cap
        return Partition([(0, len(sizes) - 1)], [total], 0.0, 0.0, 0.0, feasible=total < min_tokens and total <= cap)
    return best


def best_per_block_count(
    sizes: Sequence[int],
    scores: Sequence[float],
    block_counts: Iterable[int],
    lam: float = 0.5,
    min_tokens: int = 200,
    max_tokens: int | None = None,
    objective: Objective = Objective.published,
) -> dict[int, Partition | None]:
    """For each K in `block_counts`: the exact best partition into exactly K blocks (None: none is feasible)."""
    problem = _Problem.of(sizes, scores, lam, min_tokens, max_tokens, objective)
    if problem.total == 0:  # no tokens: only the whole trace, as optimal_partition has it
        return {k: Partition([(0, len(sizes) - 1)], [0], 0.0, 0.0, 0.0) if k == 1 else None for k in block_counts}
    return {k: problem.solve(k, k) if k >= 1 else None for k in block_counts}


@dataclass(frozen=True)
class _Problem:
    """One trace's partition problem: prefix sums of the token counts, boundary half points, limits."""

    prefix: np.ndarray  # prefix[i]: tokens in sentences [0, i)
    half: np.ndarray  # half[i]: half points of the boundary after sentence i
    lam: float
    min_tokens: int
    cap: int
    objective: Objective
    total: int  # tokens in the whole trace
    sentences: int
    offset: int  # the cut sum is divided by K - offset (0: published, 1: per-cut)

    @classmethod
    def of(
        cls,
        sizes: Sequence[int],
        scores: Sequence[float],
        lam: float,
        min_tokens: int,
        max_tokens: int | None,
        objective: Objective,
    ) -> _Problem:
        n = len(sizes)
        if n == 0:
            raise ValueError("no sentences to partition")
        if len(scores) != n - 1:
            raise ValueError(f"{len(scores)} boundary scores for {n} sentences (need {n - 1})")
        if any(s < 0 for s in sizes):
            raise ValueError("token counts must be non-negative")
        half = [round(2 * s) for s in scores]
        if any(h / 2 != s or not 0 <= h <= MAX_HALF_POINTS for h, s in zip(half, scores, strict=True)):
            raise ValueError("boundary scores must be multiples of 0.5 between 0 and 3")
        if lam < 0:
            raise ValueError("lambda must be >= 0")
        prefix = np.concatenate(([0], np.cumsum(np.asarray(sizes, dtype=np.int64))))
        total = int(prefix[-1])
        cap = total if max_tokens is None else max_tokens
        objective = Objective(objective)
        offset = 2 - objective.divisor(2)
        return cls(prefix, np.asarray(half, dtype=np.int64), lam, min_tokens, cap, objective, total, n, offset)

    def value(self, k: int, h: float, q: float) -> float:
        """J of a k-block partition with h half points of cuts and q the sum of squared block sizes."""
        if k == 1:
            return 0.0
        total = self.total
        spread = k * q - total * total
        return h / (2 * (k - self.offset)) - (self.lam * math.sqrt(spread) / total if spread > 0 else 0.0)

    def partition(self, cuts: Sequence[int]) -> Partition:
        """The partition with blocks ending before the given prefix indices (strictly increasing, in (0, n))."""
        ends = [*cuts, self.sentences]
        starts = [0, *cuts]
        tokens = [int(self.prefix[b] - self.prefix[a]) for a, b in zip(starts, ends, strict=True)]
        k = len(tokens)
        h = int(sum(self.half[c - 1] for c in cuts))
        q = sum(t * t for t in tokens)
        cv = math.sqrt(max(k * q - self.total**2, 0)) / self.total
        mean_cut = h / (2 * self.objective.divisor(k)) if k > 1 else 0.0
        blocks = [(a, b - 1) for a, b in zip(starts, ends, strict=True)]
        return Partition(blocks, tokens, self.value(k, h, q), mean_cut, cv)

    def top_sums(self) -> np.ndarray:
        """top_sums[j]: the sum of the j largest boundary half points (a bound on any j cuts)."""
        return np.concatenate(([0], np.cumsum(np.sort(self.half)[::-1])))

    def cut_bound(self, ks: np.ndarray, top_sums: np.ndarray) -> np.ndarray:
        """An upper bound on J for each K in `ks` (>= 2): its best K - 1 boundaries with CV = 0."""
        divisors = ks if self.objective is Objective.published else ks - 1
        return top_sums[np.minimum(ks - 1, len(top_sums) - 1)] / (2 * divisors)

    # ------------------------------------------------------------------ solving

    def solve(self, k_min: int = 1, k_max: int | None = None) -> Partition | None:
        """The best partition with k_min <= K <= k_max blocks, or None when none satisfies the limits."""
        n, total = self.sentences, self.total
        k_max = min(n, total // self.min_tokens if self.min_tokens > 0 else n, k_max or n)
        k_min = max(k_min, -(-total // self.cap) if self.cap > 0 else n + 1, 1)
        if k_min > k_max:
            return None
        seed = self._seed(k_min, k_max)
        if seed is None and self.cap < total:
            # Under a cap the seeds may all miss: the optimum over the strong cuts only, two chain ends per K.
            for floor in (4, 2):
                seed = self._walk(seed, k_min, k_max, floor, ends_only=True)
                if seed is not None:
                    break
        return self._walk(seed, k_min, k_max, 0)

    def _seed(self, k_min: int, k_max: int) -> Partition | None:
        """A good feasible partition: the exact best of K <= 2, and balanced partitions for many other K."""
        best = None
        if k_min == 1 and self.min_tokens <= self.total <= self.cap:
            best = Partition([(0, self.sentences - 1)], [self.total], 0.0, 0.0, 0.0)
        if k_min <= 2 <= k_max:
            best = _better(best, self._best_two_blocks())
        if k_max >= 3:
            best = _better(best, self._best_balanced(max(k_min, 3), k_max))
        return best

    def _best_two_blocks(self) -> Partition | None:
        """The exact optimum over K = 2 (vectorised over the single cut)."""
        n, total = self.sentences, self.total
        if n < 2:
            return None
        first = self.prefix[1:n]
        second = total - first
        valid = (first >= self.min_tokens) & (second >= self.min_tokens) & (first <= self.cap) & (second <= self.cap)
        if not valid.any():
            return None
        cv = np.abs(first - second) / total
        values = np.where(valid, self.half / (2 * self.objective.divisor(2)) - self.lam * cv, -np.inf)
        return self.partition([int(np.argmax(values)) + 1])

    def _best_balanced(self, k_min: int, k_max: int) -> Partition | None:
        """The best of the partitions that put K - 1 cuts near j·T/K, each at a strong boundary nearby.

        For many K at once (all of them up to BALANCED_KS), each target j·T/K takes, among the boundaries
        within half a mean block (and SNAP_REACH boundaries) of it, the one with the most half points
        less 2 per mean block of distance.
        """
        n, total = self.sentences, self.total
        boundary_tokens = self.prefix[1:n]  # tokens before boundary i (the cut after sentence i)
        if len(boundary_tokens) == 0:
            return None
        ks = np.arange(k_min, k_max + 1)
        if len(ks) > BALANCED_KS:
            ks = np.unique(np.geomspace(k_min, k_max, BALANCED_KS).round().astype(np.int64))
        counts = ks - 1
        group = np.repeat(ks, counts)  # the K of each target
        index = np.arange(len(group)) - np.repeat(np.cumsum(counts) - counts, counts)
        mean = total / group
        targets = (index + 1) * mean
        center = np.searchsorted(boundary_tokens, targets)
        window = np.clip(center[:, None] + np.arange(-SNAP_REACH, SNAP_REACH + 1)[None, :], 0, len(boundary_tokens) - 1)
        distance = np.abs(boundary_tokens[window] - targets[:, None]) / mean[:, None]
        key = np.where(distance <= 0.5, self.half[window] - 2 * distance, -np.inf)
        pick = np.argmax(key, axis=1)
        rows = np.arange(len(window))
        return self._best_of_groups(ks, counts, window[rows, pick] + 1, np.isfinite(key[rows, pick]))

    def _best_of_groups(
        self, ks: np.ndarray, counts: np.ndarray, cuts: np.ndarray, found: np.ndarray
    ) -> Partition | None:
        """The best feasible partition among one candidate per K (cuts listed K after K, K - 1 each)."""
        groups = len(ks)
        group = np.repeat(np.arange(groups), counts)
        offsets = np.cumsum(counts) - counts
        # Block ends per candidate: its cuts then the end of the text; block starts: 0 then its cuts.
        ends = np.insert(self.prefix[cuts], np.cumsum(counts), self.total)
        starts = np.insert(self.prefix[cuts], offsets, 0)
        block_group = np.repeat(np.arange(groups), ks)
        tokens = ends - starts
        bad = ~found.astype(bool)
        bad_blocks = (tokens < self.min_tokens) | (tokens > self.cap)
        infeasible = np.bincount(group, weights=bad, minlength=groups) + np.bincount(
            block_group, weights=bad_blocks, minlength=groups
        )
        increasing = np.ones(len(cuts), dtype=bool)
        increasing[1:] = cuts[1:] > cuts[:-1]
        increasing[offsets] = True
        infeasible += np.bincount(group, weights=~increasing, minlength=groups)
        h = np.bincount(group, weights=self.half[cuts - 1], minlength=groups)
        q = np.bincount(block_group, weights=tokens.astype(np.float64) ** 2, minlength=groups)
        divisors = ks if self.objective is Objective.published else ks - 1
        values = h / (2 * divisors) - self.lam * np.sqrt(np.maximum(ks * q - float(self.total) ** 2, 0)) / self.total
        values = np.where(infeasible == 0, values, -np.inf)
        best = int(np.argmax(values))
        if not np.isfinite(values[best]):
            return None
        return self.partition(cuts[offsets[best] : offsets[best] + counts[best]].tolist())

    def _walk(
        self, seed: Partition | None, k_min: int, k_max: int, floor: int, ends_only: bool = False
    ) -> Partition | None:
        """The best partition whose cuts have >= `floor` half points, or `seed` if nothing beats it.

        `ends_only`: stop after the two ends of every K's chain (a feasible, usually good, partition).
        """
        n, total = self.sentences, self.total
        bound = seed.objective if seed else -math.inf
        top_sums = self.top_sums()
        ks = np.arange(max(k_min, 2), k_max + 1)
        low, high = self.min_tokens, self.cap
        level_high = None
        if math.isfinite(bound) and len(ks):
            cut_bound = self.cut_bound(ks, top_sums)
            useful = cut_bound > bound
            ks, cut_bound = ks[useful], cut_bound[useful]
            if len(ks) == 0:
                return seed
            # A K-block partition beats `bound` only if its cut term does: so a boundary with fewer half
            # points than every K's threshold can never be a cut of a better partition.
            divisors = ks if self.objective is Objective.published else ks - 1
            others = top_sums[np.minimum(ks - 2, len(top_sums) - 1)]
            floor = max(int(np.floor((2 * divisors * bound - others - 1e-9).min())) + 1, floor)
            if self.lam > 0:
                # ... and only if CV < (cut term - bound) / λ, which keeps every block near T/K.
                # The k-th block belongs to a partition of K >= k blocks: its bound is the largest over those.
                mean = total / ks
                spread = (cut_bound - bound) / self.lam * np.sqrt(ks - 1) * mean * (1 + 1e-9) + 1
                largest = np.maximum.accumulate((mean + spread)[::-1])[::-1]  # over K >= ks[i]
                level_high = np.minimum(np.ceil(largest[np.searchsorted(ks, np.arange(ks.max() + 1))]), high)
                high = min(high, math.ceil(largest[0]))
                low = max(low, math.floor((mean - spread).min()))
        if len(ks) == 0:
            return seed
        positions = np.concatenate(([0], 1 + np.flatnonzero(self.half >= floor), [n]))
        solver = _Solver(self, positions, low, high, int(ks.min()), int(ks.max()), top_sums, level_high)
        solver.best, solver.best_value = seed, bound
        return solver.solve(ends_only)


def _better(a: Partition | None, b: Partition | None) -> Partition | None:
    if a is None:
        return b
    return b if b is not None and b.objective > a.objective else a


@dataclass
class _Point:
    """A partition into K blocks on K's hull chain: H half points, Q sum of squared sizes."""

    h: int
    q: int
    slope: tuple[int, int]  # (N, D): it maximises D·H - N·Q; (1, 0) means "min Q", (0, 1) "max H"


@dataclass(frozen=True)
class _Gap:
    """A stretch of K's chain between known points a and b that may hide a better partition: J <= bound
    and H <= h_most there."""

    bound: float
    k: int
    a: _Point
    b: _Point
    h_most: float


@dataclass
class _Probe:
    """A probe's result for one K: its chain point and the back pointers to rebuild the partition."""

    point: _Point
    levels: list[tuple[int, np.ndarray]]  # per level: first row, previous position of each row


class _Solver:
    """The hull walk over a reduced problem: blocks start and end only at `positions` (prefix indices),
    and hold between `low` and `high` tokens."""

    def __init__(
        self,
        problem: _Problem,
        positions: np.ndarray,
        low: int,
        high: int,
        k_min: int,
        k_max: int,
        top_sums: np.ndarray,
        level_high: np.ndarray | None = None,
    ) -> None:
        self.problem = problem
        self.m = m = len(positions) - 1  # the last position index
        self.prefix = prefix = problem.prefix[positions]
        self.cut = np.concatenate(([0], problem.half[positions[1:-1] - 1], [0]))  # half points of a cut at i
        self.positions = positions
        self.total = problem.total
        self.k_min, self.k_max = k_min, k_max
        # cut_bound[k]: the best cut term of k >= 2 blocks (its k - 1 best boundaries); J_k <= cut_bound[k].
        ks = np.arange(k_max + 1)
        divisors = np.maximum(ks - problem.offset, 1)
        self.cut_bound = (top_sums[np.clip(ks - 1, 0, len(top_sums) - 1)] / (2 * divisors)).tolist()
        # The previous cuts q allowed before position p form a window [first[p], last[p]] (block sizes within
        # [low, high]) inside [p - reach, p - 1]. squared[p, j] is the squared size of the block from
        # q = p - reach + j to p, +inf outside the window: every DP level costs O(m · reach).
        index = np.arange(m + 1)
        first = np.searchsorted(prefix, prefix - high, side="left")
        last = np.minimum(np.searchsorted(prefix, prefix - low, side="right") - 1, index - 1)
        self.reach = reach = max(int((index - first).max()), 1)
        self.first_list, self.last_list = first.tolist(), last.tolist()
        previous = index[:, None] - reach + np.arange(reach)[None, :]
        size = (prefix[:, None] - prefix[np.maximum(previous, 0)]).astype(np.float64)
        inside = (previous >= first[:, None]) & (previous <= last[:, None])
        self.squared = np.where(inside, size * size, np.inf)
        # shortest[r]: the fewest tokens r consecutive sentences hold; a block of at most H tokens spans at
        # most (the largest r with shortest[r] <= H) positions, so that many columns serve a level.
        back = index[None, :] - np.arange(reach + 1)[:, None]  # [r, p]: the position r sentences before p
        spans = np.where(back >= 0, prefix[None, :] - prefix[np.maximum(back, 0)], np.iinfo(np.int64).max)
        self.shortest = spans.min(axis=1)
        # level_high[k]: the largest k-th block that may still be part of a better partition. Level k only
        # looks at the last reach_of[k] columns (the larger blocks it may keep are harmless: all fit [low, high]).
        self.reach_of = [reach] * (k_max + 1)
        if level_high is not None:
            self.reach_of = self.columns_for(np.minimum(level_high[: k_max + 1], high)).tolist()
        self.index = index
        self.best: Partition | None = None
        self.best_value = -math.inf

    def hopeless(self, k: int) -> bool:
        """No partition into k blocks can beat the best: even its best k - 1 cuts with CV 0 cannot."""
        return self.cut_bound[k] <= self.best_value

    # ------------------------------------------------------------------ the linear oracle

    def probe(self, weight_q: int, weight_h: int, k_last: int) -> dict[int, _Probe]:
        """For every K <= k_last: the partition maximising weight_h·H - weight_q·Q (exact), with back pointers.

        ahead[k, reach + p] is the best weight_h·H - weight_q·Q over the text up to position p cut into k
        blocks, plus the gain of a cut at p (ready for the next block); one level per k, each a max over a
        strided (position x previous cut) view of the level before, over the rows that can be reached.
        """
        m, cut, reach, index = self.m, self.cut, self.reach, self.index
        gain = cut * float(weight_h)
        cost = self.squared * -float(weight_q)
        ahead = np.full((k_last + 1, reach + m + 1), -np.inf)
        h_ahead = np.zeros((k_last + 1, reach + m + 1), dtype=np.int64)  # H so far, plus the cut at p
        windows = np.lib.stride_tricks.as_strided(
            ahead, shape=(k_last + 1, m + 1, reach), strides=(ahead.strides[0], ahead.strides[1], ahead.strides[1])
        )
        # The first block: from position 0 to p, i.e. q = 0 at column reach - p of row p (1 <= p <= reach).
        opening = index[1 : min(reach, m) + 1]
        opening = opening[np.isfinite(self.squared[opening, reach - opening])]
        found: dict[int, _Probe] = {}
        if len(opening) == 0:
            return found
        ahead[1, reach + opening] = cost[opening, reach - opening] + gain[opening]
        h_ahead[1, reach + opening] = cut[opening]
        levels: list[tuple[int, np.ndarray]] = [(0, index[:0])]
        slope = (weight_q, weight_h)
        # Rows [lowest, highest] hold every position reached at the level (some may be unreachable: -inf).
        lowest, highest = int(opening[0]), int(opening[-1])
        for k in range(1, k_last + 1):
            if k > 1:
                # Rows whose window of previous cuts meets the rows of level k - 1: [start, stop).
                start = max(bisect.bisect_left(self.last_list, lowest), lowest + 1)
                stop = bisect.bisect_right(self.first_list, highest)
                if start >= stop:
                    break
                columns = self.reach_of[k]
                candidates = windows[k - 1, start:stop, reach - columns :] + cost[start:stop, reach - columns :]
                pick = candidates.argmax(axis=1)
                rows = index[: stop - start]
                best = candidates.ravel()[rows * columns + pick]
                chosen = pick + (start - columns) + rows
                np.add(best, gain[start:stop], out=ahead[k, reach + start : reach + stop])
                np.add(h_ahead[k - 1, reach + chosen], cut[start:stop], out=h_ahead[k, reach + start : reach + stop])
                levels.append((start, chosen))
                lowest, highest = start, stop - 1
            total = ahead[k, reach + m]  # the gain of a cut at the end is 0
            if total != -np.inf:
                h = int(h_ahead[k, reach + m])
                q = (weight_h * h - int(total)) // weight_q  # total = weight_h·H - weight_q·Q exactly
                found[k] = _Probe(_Point(h, q, slope), levels[:k])
        return found

    def cuts(self, k: int, probe: _Probe) -> list[int]:
        """The cuts (prefix indices into the sentences) of the k-block partition a probe found."""
        ends = [self.m]
        for level in range(k - 1, 0, -1):
            start, chosen = probe.levels[level]
            ends.append(int(chosen[ends[-1] - start]))
        return [int(self.positions[e]) for e in reversed(ends[1:])]

    def consider(self, k: int, probe: _Probe) -> None:
        value = self.problem.value(k, probe.point.h, probe.point.q)
        if value > self.best_value:
            self.best = self.problem.partition(self.cuts(k, probe))
            self.best_value = value

    # ------------------------------------------------------------------ walking the hull chains

    def corner_bound(self, k: int, a: _Point, b: _Point) -> tuple[float, float]:
        """Largest J, and largest H, over the triangle that holds every unseen chain point between a and b
        (J is convex, so its largest value is at a corner)."""
        (na, da), (nb, db) = a.slope, b.slope
        value = self.problem.value
        # Supporting lines: da·H - na·Q <= da·a.h - na·a.q, and the same for b. Their crossing point:
        ends = max(value(k, a.h, a.q), value(k, b.h, b.q))
        det = na * db - nb * da
        if det == 0:
            return ends, b.h
        ca, cb = da * a.h - na * a.q, db * b.h - nb * b.q
        h = (na * cb - nb * ca) / det
        q = (da * cb - db * ca) / det
        h_most = max(h, b.h)
        if k * q >= self.total**2:
            return max(ends, value(k, h, q)), h_most
        # The corner lies where K·Q < T², which no partition reaches; J <= H / (2d) bounds the rest.
        return max(ends, h_most / (2 * (k - self.problem.offset))), h_most

    def narrow(self, cut_terms: dict[int, float]) -> None:
        """Narrow each level's window to the blocks a better partition may have, given a bound on the cut
        term of every K that can still win.

        A better K-block partition has CV < (its cut term - best) / λ, and one block of size B alone forces
        CV >= |B - T/K| / (T/K · sqrt(K - 1)). The k-th block belongs to some K >= k, so level k keeps the
        largest over those.
        """
        lam = self.problem.lam
        if lam <= 0 or not cut_terms:
            return
        ks = np.array(sorted(cut_terms))
        terms = np.array([cut_terms[k] for k in ks.tolist()])
        mean = self.total / ks
        largest = mean + np.maximum(terms - self.best_value, 0) / lam * np.sqrt(ks - 1) * mean * (1 + 1e-9)
        largest = np.maximum.accumulate(largest[::-1])[::-1] + 1  # over K >= ks[i]
        levels = np.arange(1, int(ks.max()) + 1)
        columns = self.columns_for(largest[np.searchsorted(ks, levels)]).tolist()
        for level, count in zip(levels.tolist(), columns, strict=True):
            self.reach_of[level] = min(self.reach_of[level], count)

    def columns_for(self, highs: np.ndarray) -> np.ndarray:
        """How many previous positions a block of at most `highs` tokens can reach back (1 .. reach)."""
        return np.clip(np.searchsorted(self.shortest, highs, side="right") - 1, 1, self.reach)

    def solve(self, ends_only: bool = False) -> Partition | None:
        if self.k_min > self.k_max:
            return self.best
        hopeful = [k for k in range(self.k_min, self.k_max + 1) if not self.hopeless(k)]
        if not hopeful:
            return self.best
        chains: dict[int, list[_Point]] = {}
        # The two ends of every chain: most H (ties: least Q), then least Q (ties: most H). The first gives
        # each K's largest cut term, which drops the K that cannot win and narrows the windows at once.
        h_weight = int(self.total) ** 2 + 1
        most_h = self.probe(1, h_weight, hopeful[-1])
        for k in hopeful:
            divisor = k - self.problem.offset
            self.cut_bound[k] = min(self.cut_bound[k], most_h[k].point.h / (2 * divisor)) if k in most_h else -math.inf
        least_q: dict[int, _Probe] = {}
        if hopeful := [k for k in hopeful if not self.hopeless(k)]:
            self.narrow({k: self.cut_bound[k] for k in hopeful})
            least_q = self.probe(MAX_HALF_POINTS * self.m + 1, 1, hopeful[-1])
        for found in (most_h, least_q):
            for k, probe in found.items():
                if k < self.k_min:
                    continue
                chain = chains.setdefault(k, [])
                if all(p.q != probe.point.q or p.h != probe.point.h for p in chain):
                    chain.append(probe.point)
                    chain.sort(key=lambda p: p.q)
                self.consider(k, probe)
        if ends_only:
            return self.best
        # Open gaps of every chain, with the bound of what they may hide.
        gaps = [gap for k, chain in chains.items() for gap in self.gaps(k, chain)]
        while True:
            gaps = [gap for gap in gaps if gap.bound > self.best_value and not self.hopeless(gap.k)]
            if not gaps:
                return self.best
            cut_terms: dict[int, float] = {}
            for gap in gaps:
                term = min(gap.h_most / (2 * (gap.k - self.problem.offset)), self.cut_bound[gap.k])
                cut_terms[gap.k] = max(cut_terms.get(gap.k, -math.inf), term)
            self.narrow(cut_terms)
            top = max(gaps, key=lambda gap: gap.bound)
            gaps.remove(top)
            a, b = top.a, top.b
            slope = (b.h - a.h, b.q - a.q)  # probe the chord's slope: maximise ΔQ·H - ΔH·Q
            k_last = max([gap.k for gap in gaps] + [top.k])  # the last K that can still win
            for kk, probe in self.probe(*slope, k_last).items():
                if kk not in chains:
                    continue
                self.consider(kk, probe)
                split = self.insert(chains[kk], probe.point)
                if split is not None:  # the point splits gap (a', b') of K's chain into two new gaps
                    left, point, right = split
                    gaps = [g for g in gaps if not (g.k == kk and g.a is left and g.b is right)]
                    gaps += [g for g in (self.gap(kk, left, point), self.gap(kk, point, right)) if g is not None]

    def gaps(self, k: int, chain: list[_Point]) -> list[_Gap]:
        return [gap for a, b in itertools.pairwise(chain) if (gap := self.gap(k, a, b)) is not None]

    def gap(self, k: int, a: _Point, b: _Point) -> _Gap | None:
        """The gap between consecutive chain points a and b, unless it cannot hide a better partition."""
        if b.h <= a.h:
            return None
        bound, h_most = self.corner_bound(k, a, b)
        return _Gap(bound, k, a, b, h_most) if bound > self.best_value else None

    @staticmethod
    def insert(chain: list[_Point], point: _Point) -> tuple[_Point, _Point, _Point] | None:
        """Add a probe's result to a chain if it lies strictly above the chord it falls into; (a, point, b)."""
        for a, b in itertools.pairwise(chain):
            if point.q in (a.q, b.q):
                return None
            if a.q < point.q < b.q:
                chord = (b.h - a.h) * (point.q - a.q) - (point.h - a.h) * (b.q - a.q)
                if chord < 0:  # strictly above the chord a-b
                    chain.insert(chain.index(b), point)
                    return a, point, b
                return None
        return None
