"""What an annotate run did and spent: per-shard tallies, the live status line, the run report.

Each finished output shard leaves its tally in `OUT_DIR/.annotate/<shard>.json`; the run report
(`OUT_DIR/annotate_report.json`) adds up the tallies of the finished shards, so it covers every run that
wrote into the folder (resumed or `--shard I/N` runs alike), plus what the last run itself sent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from openmementos.annotate.recipe import ROLES, Outcome
from openmementos.annotate.request import REPORT_FILE
from openmementos.llm import EngineStats
from openmementos.llm.pricing import cached_share
from openmementos.runtime.atomic import atomic_write
from openmementos.runtime.manifest import Manifest
from openmementos.schema import AnnotatedTrace, Usage, sum_usage

TALLY_DIR = ".annotate"


class Tally(BaseModel):
    """Counts over a set of traces (a shard, a run, a folder)."""

    traces: int = 0
    annotated: int = 0
    quarantined: dict[str, int] = {}
    spend: dict[str, Usage] = {}
    """LLM usage by recipe step, quarantined traces included (what the traces cost, cache hits or not).
    Added up exactly: the run report rounds the cost once, when it reports it."""
    blocks: int = 0
    block_tokens: int = 0
    memento_tokens: int = 0
    judged: int = 0
    passed_in_round: dict[str, int] = {}
    """Judged mementos by the first round whose score reached the threshold ("never": none did)."""

    def add(self, outcome: Outcome, threshold: float) -> None:
        self.traces += 1
        for role, usage in outcome.spend.by_role.items():
            self.spend[role] = self.spend.get(role, Usage()) + usage
        item = outcome.item
        if not isinstance(item, AnnotatedTrace):
            self.quarantined[item.reason] = self.quarantined.get(item.reason, 0) + 1
            return
        self.annotated += 1
        self.blocks += len(item.blocks)
        self.block_tokens += sum(item.block_tokens)
        self.memento_tokens += sum(item.memento_tokens)
        for review in item.reviews:
            self.judged += 1
            first = next((str(n) for n, r in enumerate(review.rounds, 1) if r.score >= threshold), "never")
            self.passed_in_round[first] = self.passed_in_round.get(first, 0) + 1

    def merge(self, other: Tally) -> None:
        self.traces += other.traces
        self.annotated += other.annotated
        self.blocks += other.blocks
        self.block_tokens += other.block_tokens
        self.memento_tokens += other.memento_tokens
        self.judged += other.judged
        for reason, count in other.quarantined.items():
            self.quarantined[reason] = self.quarantined.get(reason, 0) + count
        for role, usage in other.spend.items():
            self.spend[role] = self.spend.get(role, Usage()) + usage
        for key, count in other.passed_in_round.items():
            self.passed_in_round[key] = self.passed_in_round.get(key, 0) + count

    def total(self) -> Usage:
        return sum_usage(self.spend.values())

    def pass_rates(self, max_rounds: int) -> dict[str, float]:
        """Share of judged mementos at or above the threshold after each round (cumulative)."""
        rates, passed = {}, 0
        for number in range(1, max_rounds + 1):
            passed += self.passed_in_round.get(str(number), 0)
            rates[str(number)] = round(passed / self.judged, 4) if self.judged else 0.0
        return rates


# --------------------------------------------------------------------------- per-shard tallies on disk


def write_shard_tally(out_dir: Path, shard: str, tally: Tally) -> None:
    folder = out_dir / TALLY_DIR
    folder.mkdir(exist_ok=True)
    atomic_write(folder / f"{shard}.json", tally.model_dump_json())


def folder_tally(out_dir: Path, manifest: Manifest) -> Tally:
    """The tallies of the finished shards of an output folder, added up."""
    total = Tally()
    for name in manifest.done:
        path = out_dir / TALLY_DIR / f"{name}.json"
        if path.exists():
            total.merge(Tally.model_validate_json(path.read_text()))
    return total


# --------------------------------------------------------------------------- live status and run report


class LiveStatus:
    """The progress line of a running annotate: traces/s, HTTP requests on the wire and queued ones,
    tokens, cost, ETA."""

    def __init__(self, total_traces: int, stats: EngineStats | None = None) -> None:
        self.total = total_traces
        self.stats = stats
        self.run = Tally()
        self.started = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def __call__(self) -> str:
        done = self.run.traces
        elapsed = self.elapsed()
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [f"{done:,}/{self.total:,} traces", f"{rate:,.2f} traces/s"]
        if self.stats is not None:
            stats = self.stats
            tokens = stats.prompt_tokens + stats.completion_tokens
            parts += [f"{stats.sending} requests in flight", f"{stats.queued} queued"]
            parts += [f"{tokens:,} tok paid", f"${stats.cost_usd:,.4f}"]
            if stats.cached_prompt_tokens:
                parts.append(f"{cached_share(stats.cached_prompt_tokens, stats.prompt_tokens)} of prompt cached")
            if stats.cache_hits:
                parts.append(f"{stats.cache_hits:,} cached")
        if quarantined := sum(self.run.quarantined.values()):
            parts.append(f"{quarantined:,} quarantined")
        if rate > 0 and self.total > done:
            parts.append(f"ETA {_clock((self.total - done) / rate)}")
        return " · ".join(parts)


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run_report(
    out_dir: Path,
    manifest: Manifest,
    live: LiveStatus,
    *,
    threshold: float,
    max_rounds: int,
    interrupted: bool = False,
) -> dict[str, Any]:
    """The run report: the folder's totals over finished shards, and what this run sent."""
    tally = folder_tally(out_dir, manifest)
    total = tally.total()
    per_trace = {
        "requests": total.requests / tally.traces if tally.traces else 0.0,
        "prompt_tokens": total.prompt_tokens / tally.traces if tally.traces else 0.0,
        "cached_prompt_tokens": total.cached_prompt_tokens / tally.traces if tally.traces else 0.0,
        "completion_tokens": total.completion_tokens / tally.traces if tally.traces else 0.0,
        "cost_usd": total.cost_usd / tally.traces if tally.traces else 0.0,
    }
    result: dict[str, Any] = {
        "stage": manifest.stage,
        "options": manifest.options,
        "complete": manifest.complete,
        "shards": {"done": len(manifest.done), "total": manifest.shards_total},
        "traces": {
            "total": tally.traces,
            "annotated": tally.annotated,
            "quarantined": sum(tally.quarantined.values()),
            "quarantine_reasons": dict(sorted(tally.quarantined.items())),
        },
        "usage": {
            "total": total.model_dump(),
            "by_step": {role: tally.spend[role].rounded().model_dump() for role in ROLES if role in tally.spend},
            "per_trace": {key: round(value, 6) for key, value in per_trace.items()},
        },
        "compression": {
            "blocks": tally.blocks,
            "block_tokens": tally.block_tokens,
            "memento_tokens": tally.memento_tokens,
            "memento_to_block_ratio": round(tally.memento_tokens / tally.block_tokens, 4) if tally.block_tokens else 0,
        },
        "last_run": {
            "interrupted": interrupted,
            "elapsed_s": round(live.elapsed(), 3),
            "traces": live.run.traces,
            "traces_per_s": round(live.run.traces / live.elapsed(), 4) if live.elapsed() > 0 else 0.0,
            "engine": live.stats.to_dict() if live.stats is not None else None,
        },
    }
    if tally.judged:
        result["judge"] = {
            "mode": manifest.options.get("judge"),
            "threshold": threshold,
            "max_rounds": max_rounds,
            "mementos_judged": tally.judged,
            "pass_rate_after_round": tally.pass_rates(max_rounds),
            "kept_below_threshold": tally.passed_in_round.get("never", 0),
        }
    return result


def write_report(out_dir: Path, data: dict[str, Any]) -> Path:
    path = out_dir / REPORT_FILE
    atomic_write(path, json.dumps(data, indent=2) + "\n")
    return path
