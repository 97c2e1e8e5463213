"""Stratified selection of input rows: exact quotas per stratum, decided row by row.

A stratum is a row's (domain, source, difficulty). A `SelectionRequest` (`--limit`, `--ratio`,
`--domains`, `--seed`) becomes one quota per stratum:

1. the domains: `--domains`, else those named by `--ratio`, else every domain of the input;
2. the total T: `--limit`, else the largest total the ratios allow (every row when no ratio is given);
3. T is split across the domains by the ratios (default: the domains' own shares of the input), capped
   by the rows each domain has (what is missing is recorded as a shortfall); each domain's quota is
   then split across its (source, difficulty) strata in proportion to their sizes. Both splits use
   largest-remainder rounding, so quotas add up exactly;
4. in each stratum the quota is filled by the rows with the smallest `row_hash(seed, key)`, where
   `key` names the row's place in the input (file label and row index).

Quotas need the stratum sizes and thresholds need every hash, so a plan takes two passes over the
metadata columns (`strata.py` groups each file's rows by stratum with polars): `StratumCounts`, then
`BoundFinder`, which hashes only the rows of strata that are neither taken whole nor left out. The
main pass then keeps a row iff its hash
is below its stratum's bound: a decision that needs only the row and the plan, so every split of the
input into shards (`--shard I/N`) selects the same rows, in one streaming pass. A larger `--limit`
selects a superset of a smaller one. Two rows of a stratum sharing the threshold hash (odds ~1e-10
at a million rows) are both kept.

Rows are drawn before the content filters run; filtering everything first and selecting from that
output (`--input`) instead gives quotas on clean rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, TypeVar

Stratum = tuple[str, Any, Any]
"""(domain, source, difficulty); source and difficulty as found (str, int or None) or as JSON text."""

HASH_SPACE = 1 << 64
K = TypeVar("K")


def row_hash(seed: int, key: str) -> int:
    """A uniform 64-bit number per (seed, row key): the row's rank in the random draw."""
    return row_hashes(seed, (key,))[0]


def row_hashes(seed: int, keys: Iterable[str]) -> list[int]:
    """`row_hash` of many keys, in one loop."""
    blake2b, from_bytes = hashlib.blake2b, int.from_bytes
    return [from_bytes(blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest(), "big") for key in keys]


def stratum_value(value: Any) -> Any:
    """A hashable, JSON-able form of a metadata value (str, int and None stay as they are)."""
    if value is None or isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _order(key: Any) -> str:
    return json.dumps(key, default=str)


def apportion(total: int, weights: Mapping[K, Fraction]) -> dict[K, int]:
    """Split `total` in proportion to `weights` by largest remainders; ties go to the smaller key."""
    weight_sum = sum(weights.values(), Fraction(0))
    if weight_sum == 0:
        return dict.fromkeys(weights, 0)
    exact = {key: total * weight / weight_sum for key, weight in weights.items()}
    shares = {key: math.floor(value) for key, value in exact.items()}
    by_remainder = sorted(weights, key=lambda key: (-(exact[key] - shares[key]), _order(key)))
    for key in by_remainder[: total - sum(shares.values())]:
        shares[key] += 1
    return shares


@dataclass(frozen=True)
class SelectionRequest:
    """What the user asked for. `ratios` are weights per domain (normalised to sum to 1)."""

    seed: int = 42
    limit: int | None = None
    ratios: tuple[tuple[str, Fraction], ...] = ()
    domains: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        total = sum((weight for _, weight in self.ratios), Fraction(0))
        return {
            "seed": self.seed,
            "limit": self.limit,
            "ratios": {domain: float(weight / total) for domain, weight in self.ratios} if total else {},
            "domains": list(self.domains),
        }


@dataclass(frozen=True)
class SelectionPlan:
    """Per-stratum bounds: a row of stratum s is selected iff `row_hash(seed, key) < bounds[s]`."""

    seed: int
    bounds: Mapping[Stratum, int]
    quotas: Mapping[Stratum, int]
    sizes: Mapping[Stratum, int]
    file_rows: tuple[int, ...]
    summary: dict[str, Any] = field(default_factory=dict)

    def selects(self, stratum: Stratum, key: str) -> bool:
        bound = self.bounds.get(stratum)
        if bound is None:
            raise KeyError(stratum)
        return bound == HASH_SPACE or (bound > 0 and row_hash(self.seed, key) < bound)

    def as_json(self) -> dict[str, Any]:
        strata = [
            [*stratum, self.sizes[stratum], self.quotas[stratum], self.bounds[stratum]]
            for stratum in sorted(self.sizes, key=_order)
        ]
        return {**self.summary, "file_rows": list(self.file_rows), "strata": strata}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SelectionPlan:
        sizes, quotas, bounds = {}, {}, {}
        for domain, source, difficulty, size, quota, bound in data["strata"]:
            stratum = (domain, source, difficulty)
            sizes[stratum], quotas[stratum], bounds[stratum] = size, quota, bound
        summary = {k: v for k, v in data.items() if k not in ("file_rows", "strata")}
        return cls(data["request"]["seed"], bounds, quotas, sizes, tuple(data["file_rows"]), summary)


@dataclass
class StratumCounts:
    """Pass 1: rows per stratum, rows per input file, rows that carry no usable domain."""

    sizes: Counter[Stratum] = field(default_factory=Counter)
    file_rows: list[int] = field(default_factory=list)
    unclassified: int = 0

    def add_file(self, strata: Iterable[tuple[Stratum | None, int]]) -> None:
        """Add one input file, given as (stratum or None, rows) pairs."""
        total = 0
        for stratum, rows in strata:
            total += rows
            if stratum is None:
                self.unclassified += rows
            else:
                self.sizes[stratum] += rows
        self.file_rows.append(total)


def allocate(counts: StratumCounts, request: SelectionRequest) -> tuple[dict[Stratum, int], dict[str, Any]]:
    """Quotas per stratum for a request, and a summary of the allocation per domain.

    Raises ValueError when the request names a domain the input does not have.
    """
    domain_rows: Counter[str] = Counter()
    for (domain, _, _), size in counts.sizes.items():
        domain_rows[domain] += size
    ratios = dict(request.ratios)
    if request.domains and ratios and set(request.domains) != set(ratios):
        raise ValueError(f"--domains {sorted(request.domains)} and the --ratio domains {sorted(ratios)} differ")
    chosen = list(request.domains or ratios or sorted(domain_rows))
    unknown = [domain for domain in chosen if domain not in domain_rows]
    if unknown:
        present = ", ".join(f"{d} ({n:,})" for d, n in sorted(domain_rows.items())) or "none"
        raise ValueError(f"the input has no rows of domain {', '.join(unknown)}; domains present: {present}")
    weights = {d: Fraction(ratios[d]) for d in chosen} if ratios else {d: Fraction(domain_rows[d]) for d in chosen}
    weight_sum = sum(weights.values(), Fraction(0))
    if weight_sum <= 0:
        raise ValueError("--ratio weights must not all be zero")
    if request.limit is not None:
        total = request.limit
    elif ratios:
        total = min(math.floor(domain_rows[d] * weight_sum / w) for d, w in weights.items() if w > 0)
    else:
        total = sum(domain_rows[d] for d in chosen)
    targets = apportion(total, weights)
    drawn = {d: min(targets[d], domain_rows[d]) for d in chosen}
    quotas: dict[Stratum, int] = {stratum: 0 for stratum in counts.sizes}
    for domain in chosen:
        strata = {s: Fraction(n) for s, n in counts.sizes.items() if s[0] == domain}
        quotas.update(apportion(drawn[domain], strata))
    summary = {
        "input_rows": dict(sorted(domain_rows.items())),
        "target": targets,
        "drawn": drawn,
        "shortfall": {d: targets[d] - drawn[d] for d in chosen if targets[d] > drawn[d]},
        "not_selected": sum(counts.sizes.values()) - sum(drawn.values()),
        "unclassified": counts.unclassified,
    }
    return quotas, summary


class BoundFinder:
    """Pass 2: per stratum, the `quota` smallest hashes seen (memory O(quota): kept sorted, pruned in bulk)."""

    def __init__(self, seed: int, quotas: Mapping[Stratum, int], sizes: Mapping[Stratum, int]) -> None:
        self.seed = seed
        self.quotas = quotas
        self.sizes = sizes
        self._smallest: dict[Stratum, list[int]] = {s: [] for s, q in quotas.items() if 0 < q < sizes[s]}

    @property
    def needed(self) -> bool:
        """False when every stratum is taken whole or not at all: no hash needs to be seen."""
        return bool(self._smallest)

    def wants(self, stratum: Stratum | None) -> bool:
        """Whether the hashes of this stratum's rows decide its bound."""
        return stratum in self._smallest

    def add(self, stratum: Stratum | None, keys: Iterable[str]) -> None:
        """See the rows of `stratum` with these keys (rows of other strata are ignored)."""
        kept = self._smallest.get(stratum) if stratum is not None else None
        if kept is None:
            return
        kept.extend(row_hashes(self.seed, keys))
        quota = self.quotas[stratum]
        if len(kept) > quota + quota // 2 + PRUNE_SLACK:
            _keep_smallest(kept, quota)

    def bounds(self) -> dict[Stratum, int]:
        bounds = {}
        for stratum, quota in self.quotas.items():
            if stratum in self._smallest:
                kept = self._smallest[stratum]
                _keep_smallest(kept, quota)
                bounds[stratum] = kept[-1] + 1  # one above the largest kept hash
            else:
                bounds[stratum] = HASH_SPACE if quota == self.sizes[stratum] else 0
        return bounds


PRUNE_SLACK = 4096
"""Hashes a stratum may hold beyond 1.5 times its quota before it is pruned back to its quota."""


def _keep_smallest(hashes: list[int], count: int) -> None:
    hashes.sort()
    del hashes[count:]
