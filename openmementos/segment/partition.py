"""The optimal partition of a trace's sentences into blocks.

Objective (SPEC 4.4), over partitions of the sentences into K contiguous blocks:

    J = mean(cut scores) - λ · CV(block sizes)

with CV = population std / mean of the block token counts, the cut score of a block being the score of
the boundary before it (the first block has none; K = 1 has J = 0), and every block holding at least
`min_tokens` (and at most `max_tokens`, when given) tokens. `optimal_partition` returns a partition
with the largest J: the true optimum, not a heuristic.

Why it is exact and fast. Fix K; write H for the sum of the cut scores in half points and Q for the sum
of squared block sizes (T = total tokens). Then

    J_K(H, Q) = H / (2 (K - 1)) - (λ / T) · sqrt(K·Q - T²)

is linear in H and convex in Q, so it is convex in (H, Q). A convex function's maximum over a finite
set of points lies on a vertex of their convex hull, and since J_K grows with H and falls with Q, on
the hull's upper-left chain: points that maximise the *linear* score `H - μ·Q` for some μ >= 0. For one
μ that maximum is an ordinary DP over (blocks so far, sentence position) — no score dimension — and one
DP pass gives it for every K at once. So we walk each K's chain the way one traces a convex hull with
a linear oracle (probe the slope of a chord; a new point splits the chord, none proves it an edge), and
skip every stretch of chain whose best possible J (the value at the corner of the triangle that
encloses it, J being convex) cannot beat the best partition found so far. Probes use integer weights,
so every comparison is exact (float64 holds these integers exactly).

Pruning, all of it safe: the walk starts from a good feasible partition (the exact best of one or two
blocks, or under a cap the best over strong boundaries only), drops every K whose best K - 1 boundary
scores cannot beat it, and every boundary too weak to be a cut of any better partition; a probe runs
only up to the last K that can still win, and under a cap each DP level only looks back over the window
of cuts that keep the block within the size limits.

The issue's hint (a DP over K and the half-point sum H) is exact too; tests check the two agree, and
against brute force. It carries an extra dimension of up to 6K values, which this walk does not.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

MAX_HALF_POINTS = 6  # scores are 0..3 in half points


@dataclass(frozen=True)
class Partition:
    """Blocks as inclusive `(first, last)` sentence ranges, with the objective's parts."""

    blocks: list[tuple[int, int]]
    block_tokens: list[int]
    objective: float
    mean_cut: float
    cv: float
    feasible: bool = True  # False: no partition satisfies the size limits; the trace is one block


def evaluate(scores: Sequence[float], sizes: Sequence[int], blocks: Sequence[tuple[int, int]], lam: float) -> Partition:
    """A given partition with J and its parts (for tests and `explain`; the solver computes them incrementally)."""
    block_tokens = [sum(sizes[first : last + 1]) for first, last in blocks]
    k = len(blocks)
    if k == 1:
        return Partition(list(blocks), block_tokens, 0.0, 0.0, 0.0)
    mean = sum(block_tokens) / k
    cv = math.sqrt(sum((t - mean) ** 2 for t in block_tokens) / k) / mean if mean else 0.0
    mean_cut = sum(scores[first - 1] for first, _ in blocks[1:]) / (k - 1)
    return Partition(list(blocks), block_tokens, mean_cut - lam * cv, mean_cut, cv)


def objective(scores: Sequence[float], sizes: Sequence[int], blocks: Sequence[tuple[int, int]], lam: float) -> float:
    """J of a given partition."""
    return evaluate(scores, sizes, blocks, lam).objective


def optimal_partition(
    sizes: Sequence[int],
    scores: Sequence[float],
    lam: float = 0.5,
    min_tokens: int = 200,
    max_tokens: int | None = None,
) -> Partition:
    """The partition of sentences (token `sizes`) that maximises J, given boundary `scores` (0-3, half points).

    `scores[i]` is the score of the boundary after sentence i. When no partition satisfies the size
    limits the result is the whole trace as one block with `feasible=False`, except that a trace whose
    total is below `min_tokens` (and within `max_tokens`) is simply one feasible block.
    """
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
    total = int(sum(sizes))
    if total == 0:  # no tokens at all: nothing to balance, one block
        return Partition([(0, n - 1)], [0], 0.0, 0.0, 0.0)
    cap = total if max_tokens is None else max_tokens
    best = _solve(np.asarray(sizes, dtype=np.int64), np.asarray(half, dtype=np.int64), lam, min_tokens, cap)
    if best is None:
        return Partition([(0, n - 1)], [total], 0.0, 0.0, 0.0, feasible=total < min_tokens and total <= cap)
    return best


def _solve(sizes: np.ndarray, half: np.ndarray, lam: float, min_tokens: int, cap: int) -> Partition | None:
    """Seed with a good feasible partition, then walk the hulls of the cut positions that can beat it."""
    prefix = np.concatenate(([0], np.cumsum(sizes)))
    seed = _best_of_one_or_two_blocks(prefix, half, lam, min_tokens, cap)
    # With a cap, one or two blocks may be infeasible: then seed with the optimum over the strong cuts only.
    # (Only the two ends of each K's hull there: a good seed is enough, the full walk below does the rest.)
    for floor in (4, 2):
        if seed is not None:
            break
        seed = _walk(prefix, half, lam, min_tokens, cap, None, floor, ends_only=True)
    return _walk(prefix, half, lam, min_tokens, cap, seed, 0)


def _walk(
    prefix: np.ndarray,
    half: np.ndarray,
    lam: float,
    min_tokens: int,
    cap: int,
    seed: Partition | None,
    floor: int,
    ends_only: bool = False,
) -> Partition | None:
    """The best partition whose cuts have >= `floor` half points, or `seed` if nothing beats it.

    `ends_only`: stop after the two ends of every K's chain (a feasible, usually good, partition).
    """
    n = len(prefix) - 1
    total = int(prefix[-1])
    bound = seed.objective if seed else -math.inf
    top_sums = np.concatenate(([0], np.cumsum(np.sort(half)[::-1])))
    k_min = max(1, -(-total // cap)) if cap > 0 else n + 1
    k_max = min(total // min_tokens if min_tokens > 0 else n, n)
    # A K-block partition beats `bound` only if its mean cut does: (h + best other K - 2 cuts) / (2(K-1)) > bound.
    # So a boundary with fewer half points than every K's threshold can never be a cut of a better partition.
    ks = np.arange(max(k_min, 2), k_max + 1)
    if len(ks) == 0:
        return seed
    if math.isfinite(bound):
        useful = ks[top_sums[np.minimum(ks - 1, len(top_sums) - 1)] / (2 * (ks - 1)) > bound]
        if len(useful) == 0:
            return seed
        needed = 2 * (useful - 1) * bound - top_sums[np.minimum(useful - 2, len(top_sums) - 1)] - 1e-9
        floor = max(int(np.floor(needed.min())) + 1, floor)
        ks = useful
    positions = np.concatenate(([0], 1 + np.flatnonzero(half >= floor), [n]))
    solver = _Solver(
        prefix[positions],
        np.concatenate(([0], half[positions[1:-1] - 1], [0])),
        positions,
        lam,
        min_tokens,
        cap,
        int(ks.min()),
        int(ks.max()),
        top_sums,
    )
    solver.best, solver.best_value = seed, bound
    return solver.solve(ends_only)


def _best_of_one_or_two_blocks(
    prefix: np.ndarray, half: np.ndarray, lam: float, min_tokens: int, cap: int
) -> Partition | None:
    """The exact optimum over K <= 2 (vectorised over the single cut), or None when neither is feasible."""
    n, total = len(prefix) - 1, int(prefix[-1])
    best = Partition([(0, n - 1)], [total], 0.0, 0.0, 0.0) if min_tokens <= total <= cap else None
    if n < 2 or total == 0:
        return best
    first = prefix[1:n]
    second = total - first
    valid = (first >= min_tokens) & (second >= min_tokens) & (first <= cap) & (second <= cap)
    if not valid.any():
        return best
    cv = np.abs(first - second) / total
    values = np.where(valid, half / 2 - lam * cv, -np.inf)
    cut = int(np.argmax(values))
    if best is not None and values[cut] <= best.objective:
        return best
    return Partition(
        [(0, cut), (cut + 1, n - 1)],
        [int(first[cut]), int(second[cut])],
        float(values[cut]),
        half[cut] / 2,
        float(cv[cut]),
    )


@dataclass
class _Point:
    """A partition into K blocks on K's hull chain: H half points, Q sum of squared sizes."""

    h: int
    q: int
    slope: tuple[int, int]  # (N, D): it maximises D·H - N·Q; (1, 0) means "min Q", (0, 1) "max H"


@dataclass
class _Chain:
    """The known points of one K's upper-left hull chain, in increasing Q, and which gaps are settled."""

    points: list[_Point] = field(default_factory=list)
    settled: set[tuple[int, int]] = field(default_factory=set)  # (Q_a, Q_b) of gaps proven to be edges


class _Solver:
    """The hull walk over a reduced problem: blocks start and end only at `positions` (prefix indices)."""

    def __init__(
        self,
        prefix: np.ndarray,
        cut: np.ndarray,
        positions: np.ndarray,
        lam: float,
        min_tokens: int,
        cap: int,
        k_min: int,
        k_max: int,
        top_sums: np.ndarray,
    ) -> None:
        self.m = m = len(prefix) - 1  # the last position index
        self.prefix = prefix
        self.cut = cut  # cut[i]: half points of a block boundary at position i
        self.positions = positions
        self.lam = lam
        self.total = int(prefix[-1])
        self.k_min, self.k_max = k_min, k_max
        self.top_sums = top_sums  # sums of the best boundary scores overall, for the mean-cut bound
        # The previous cuts q allowed before position p form a window [first[p], last[p]] (block sizes within
        # [min_tokens, cap]). band[p, j] = first[p] + j; squared[p, j] is the squared size of the block from
        # band[p, j] to p, +inf outside the window. With a cap the window is narrow: levels cost O(m·width).
        index = np.arange(m + 1)
        first = np.searchsorted(prefix, prefix - cap, side="left")
        last = np.minimum(np.searchsorted(prefix, prefix - min_tokens, side="right") - 1, index - 1)
        width = max(int((last - first).max()) + 1, 1)
        self.window_start = first
        self.band = np.minimum(first[:, None] + np.arange(width)[None, :], m)
        size = (prefix[:, None] - prefix[self.band]).astype(np.float64)
        self.squared = np.where(self.band <= last[:, None], size * size, np.inf)
        self.best: Partition | None = None
        self.best_value = -math.inf

    # ------------------------------------------------------------------ the objective and its bounds

    def value(self, k: int, h: float, q: float) -> float:
        if k == 1:
            return 0.0
        spread = math.sqrt(max(k * q - self.total * self.total, 0.0))
        return h / (2 * (k - 1)) - self.lam * spread / self.total

    def hopeless(self, k: int) -> bool:
        """No partition into k blocks can beat the best: even its best k - 1 cuts with CV 0 cannot."""
        return k > 1 and self.top_sums[min(k - 1, len(self.top_sums) - 1)] / (2 * (k - 1)) <= self.best_value

    # ------------------------------------------------------------------ the linear oracle

    def probe(self, weight_q: int, weight_h: int, k_last: int) -> dict[int, tuple[_Point, list[np.ndarray]]]:
        """For every K <= k_last: the partition maximising weight_h·H - weight_q·Q (exact), with back pointers.

        value[p] is the best weight_h·H - weight_q·Q over the text up to position p cut into k blocks; one
        level per k, each a masked (position x previous cut) max, laid out so numpy reduces along rows.
        """
        n, cut, squared = self.m, self.cut, self.squared
        gain = cut * float(weight_h)
        value = -float(weight_q) * np.where(self.band[:, 0] == 0, squared[:, 0], np.inf)
        h_sum = np.zeros(n + 1, dtype=np.int64)
        back: list[np.ndarray] = [np.zeros(n + 1, dtype=np.int64)]
        found: dict[int, tuple[_Point, list[np.ndarray]]] = {}
        slope = (weight_q, weight_h)

        def record(k: int) -> None:
            if np.isfinite(value[n]):
                h = int(h_sum[n])
                q = (weight_h * h - int(value[n])) // weight_q  # value = weight_h·H - weight_q·Q exactly
                found[k] = (_Point(h, q, slope), back)

        record(1)
        rows = np.arange(n + 1)
        for k in range(2, k_last + 1):
            reachable = np.flatnonzero(np.isfinite(value[:n]))
            if len(reachable) == 0:
                break
            # Positions p whose window of previous cuts meets the reachable ones: [start, stop).
            start = int(reachable[0]) + 1
            stop = int(np.searchsorted(self.window_start, reachable[-1], side="right"))
            band = self.band[start:stop]
            candidates = squared[start:stop] * -float(weight_q)
            candidates += (value + gain)[band]
            pick = np.argmax(candidates, axis=1)
            best = candidates[rows[: stop - start], pick]
            chosen = band[rows[: stop - start], pick]
            value = np.full(n + 1, -np.inf)
            value[start:stop] = best
            pointer = np.zeros(n + 1, dtype=np.int64)
            pointer[start:stop] = chosen
            new_h = np.zeros(n + 1, dtype=np.int64)
            new_h[start:stop] = h_sum[chosen] + cut[chosen]
            h_sum = new_h
            back = [*back, pointer]
            record(k)
        return found

    def blocks(self, k: int, back: list[np.ndarray]) -> list[tuple[int, int]]:
        """Sentence ranges of the k-block partition that ends the back pointers."""
        ends = [self.m]
        for level in range(k - 1, 0, -1):
            ends.append(int(back[level][ends[-1]]))
        ends.append(0)
        starts = [int(self.positions[e]) for e in reversed(ends)]
        return [(starts[i], starts[i + 1] - 1) for i in range(len(starts) - 1)]

    def consider(self, k: int, point: _Point, back: list[np.ndarray]) -> None:
        value = self.value(k, point.h, point.q)
        if value > self.best_value:
            blocks = self.blocks(k, back)
            ends = np.searchsorted(self.positions, [last + 1 for _, last in blocks])
            tokens = np.diff(np.concatenate(([0], self.prefix[ends]))).tolist()
            cv = math.sqrt(max(k * point.q - self.total**2, 0)) / self.total
            mean_cut = point.h / (2 * (k - 1)) if k > 1 else 0.0
            self.best = Partition(blocks, tokens, value, mean_cut, cv)
            self.best_value = value

    # ------------------------------------------------------------------ walking the hull chains

    def corner_bound(self, k: int, a: _Point, b: _Point) -> float:
        """Largest J over the triangle that holds every unseen chain point between a and b (J is convex)."""
        (na, da), (nb, db) = a.slope, b.slope
        # Supporting lines: da·H - na·Q <= da·a.h - na·a.q, and the same for b. Their crossing point:
        ends = max(self.value(k, a.h, a.q), self.value(k, b.h, b.q))
        det = na * db - nb * da
        if det == 0:
            return ends
        ca, cb = da * a.h - na * a.q, db * b.h - nb * b.q
        h = (na * cb - nb * ca) / det
        q = (da * cb - db * ca) / det
        if k * q >= self.total**2:
            return max(ends, self.value(k, h, q))
        # The corner lies where K·Q < T², which no partition reaches; J <= H / (2(K-1)) bounds the rest.
        return max(ends, max(h, a.h, b.h) / (2 * (k - 1)))

    def solve(self, ends_only: bool = False) -> Partition | None:
        if self.k_min > self.k_max:
            return None
        hopeful = [k for k in range(self.k_min, self.k_max + 1) if not self.hopeless(k)]
        if not hopeful:
            return self.best
        k_last = hopeful[-1]
        chains: dict[int, _Chain] = {}
        # The two ends of every chain: least Q (ties: most H), then most H (ties: least Q).
        h_weight = int(self.total) ** 2 + 1
        for slope in ((MAX_HALF_POINTS * self.m + 1, 1), (1, h_weight)):
            for k, (point, back) in self.probe(*slope, k_last).items():
                if k < self.k_min:
                    continue
                chain = chains.setdefault(k, _Chain())
                if all(p.q != point.q or p.h != point.h for p in chain.points):
                    chain.points.append(point)
                    chain.points.sort(key=lambda p: p.q)
                self.consider(k, point, back)
        while not ends_only:
            gaps = self.open_gaps(chains)
            if not gaps:
                break
            _, k, a, b = max(gaps, key=lambda gap: gap[0])
            slope = (b.h - a.h, b.q - a.q)  # probe the chord's slope: maximise ΔQ·H - ΔH·Q
            k_last = max(gap[1] for gap in gaps)  # no need to go beyond the last K that can still win
            for kk, (point, back) in self.probe(*slope, k_last).items():
                if kk in chains:
                    self.consider(kk, point, back)
                    self.insert(chains[kk], point)
            chains[k].settled.add((a.q, b.q))  # the chord was probed: new point inserted, or an edge
        return self.best

    def insert(self, chain: _Chain, point: _Point) -> None:
        """Add a probe's result to a chain, unless it lies on or under the chord it falls into."""
        for a, b in zip(chain.points, chain.points[1:], strict=False):
            if a.q < point.q < b.q:
                chord = (b.h - a.h) * (point.q - a.q) - (point.h - a.h) * (b.q - a.q)
                if chord < 0:  # strictly above the chord a-b
                    chain.points.append(point)
                    chain.points.sort(key=lambda p: p.q)
                return
            if point.q in (a.q, b.q):
                return

    def open_gaps(self, chains: dict[int, _Chain]) -> list[tuple[float, int, _Point, _Point]]:
        """(bound, K, a, b) for every unsettled gap of a chain that might still hide a better partition."""
        gaps = []
        for k, chain in chains.items():
            if self.hopeless(k):
                continue
            for a, b in itertools.pairwise(chain.points):
                if (a.q, b.q) in chain.settled or b.h <= a.h:
                    continue
                bound = self.corner_bound(k, a, b)
                if bound > self.best_value:
                    gaps.append((bound, k, a, b))
        return gaps
