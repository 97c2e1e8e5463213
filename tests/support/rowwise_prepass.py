"""The download pre-pass as it was before polars, kept as the oracle of the tests and the baseline of
`benchmarks/bench_download.py`: every row of the metadata columns through Python, as dicts, with a heap
of the smallest hashes per stratum. Its row hash is a frozen copy, so a change to the product's
`row_hash` (which would change every selection) shows up as a difference."""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter

from openmementos.download.mapping import ColumnMapping
from openmementos.download.readers import InputFile, Unreadable, iter_rows
from openmementos.download.sampling import SelectionPlan, SelectionRequest, StratumCounts, allocate

HASH_SPACE = 1 << 64


def frozen_row_hash(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest(), "big")


def row_by_row_plan(files: list[InputFile], mapping: ColumnMapping, request: SelectionRequest) -> SelectionPlan:
    """Both passes row by row: stratum sizes, then the per-stratum hash bounds."""

    def strata(file: InputFile):
        for index, row in iter_rows(file, mapping.metadata_columns()):
            yield f"{file.label}#{index}", None if isinstance(row, Unreadable) else mapping.stratum(row)

    sizes: Counter = Counter()
    file_rows, unclassified = [], 0
    for file in files:
        rows = 0
        for _, stratum in strata(file):
            rows += 1
            if stratum is None:
                unclassified += 1
            else:
                sizes[stratum] += 1
        file_rows.append(rows)
    quotas, summary = allocate(StratumCounts(sizes, file_rows, unclassified), request)
    heaps: dict = {s: [] for s, q in quotas.items() if 0 < q < sizes[s]}
    if heaps:
        for file in files:
            for key, stratum in strata(file):
                heap = heaps.get(stratum)
                if heap is None:
                    continue
                negated = -frozen_row_hash(request.seed, key)
                if len(heap) < quotas[stratum]:
                    heapq.heappush(heap, negated)
                elif negated > heap[0]:
                    heapq.heapreplace(heap, negated)
    bounds = {s: 1 - heaps[s][0] if s in heaps else (HASH_SPACE if q == sizes[s] else 0) for s, q in quotas.items()}
    return SelectionPlan(
        request.seed, bounds, quotas, dict(sizes), tuple(file_rows), {"request": request.as_json(), **summary}
    )


def row_by_row_selected(plan: SelectionPlan, files: list[InputFile], mapping: ColumnMapping) -> list[str]:
    """The row keys a plan selects, decided row by row with the frozen hash."""
    chosen = []
    for file in files:
        for index, row in iter_rows(file, mapping.metadata_columns()):
            stratum = None if isinstance(row, Unreadable) else mapping.stratum(row)
            key = f"{file.label}#{index}"
            bound = plan.bounds.get(stratum)
            if stratum is None or bound == HASH_SPACE or (bound and frozen_row_hash(plan.seed, key) < bound):
                chosen.append(key)
    return chosen
