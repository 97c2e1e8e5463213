"""Throughput of the LLM engine against the loopback OpenAI stand-in (in its own process).

Prints achieved requests/s against the ideal (concurrency / latency) for a cold run (every request
goes to the server, answers are written to the response cache) and for a warm rerun (every answer
comes from the cache), plus the same cold workload through the openai client's stock httpx
transport for comparison. Target: cold ratio >= 0.9 at 200 ms latency and concurrency 256.

    .venv/bin/python benchmarks/bench_llm_engine.py [--requests 4096] [--concurrency 256] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from openmementos.llm import ChatRequest, LLMEngine, LLMSettings, ResponseCache
from openmementos.llm import transport as transport_module
from openmementos.testing.openai_standin import Faults, OpenAIStandIn


def _requests(count: int) -> list[ChatRequest]:
    return [
        ChatRequest(model="bench-model", messages=[{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}])
        for i in range(count)
    ]


async def _drive(settings: LLMSettings, cache_path: Path, requests: list[ChatRequest]) -> tuple[float, dict]:
    with ResponseCache(cache_path) as cache:
        async with LLMEngine(settings, cache=cache) as engine:
            # One warm-up wave opens the connections; it is not timed (its answers are discarded).
            warmup = [
                ChatRequest(model="warmup", messages=[{"role": "user", "content": str(i)}])
                for i in range(settings.concurrency)
            ]
            await asyncio.gather(*(engine.complete(r) for r in warmup))
            start = time.perf_counter()
            results = await asyncio.gather(*(engine.complete(r) for r in requests))
            elapsed = time.perf_counter() - start
            assert len(results) == len(requests)
            return len(requests) / elapsed, engine.stats.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=4096)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.2, help="stand-in latency per request, seconds")
    args = parser.parse_args()
    ideal = args.concurrency / args.latency
    requests = _requests(args.requests)
    print(f"{args.requests} requests, concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms")
    print(f"ideal (concurrency / latency): {ideal:,.0f} req/s")
    with OpenAIStandIn(Faults(latency_s=args.latency), process=True) as server, tempfile.TemporaryDirectory() as tmp:
        settings = LLMSettings(base_urls=(server.base_url,), api_key="bench-key", concurrency=args.concurrency)
        cache_path = Path(tmp) / "llm_cache.sqlite"
        cold, _ = asyncio.run(_drive(settings, cache_path, requests))
        print(f"cold (sent to the server, cached): {cold:,.0f} req/s   ratio {cold / ideal:.3f}   (target >= 0.9)")
        warm, warm_stats = asyncio.run(_drive(settings, cache_path, requests))
        assert warm_stats["sent"] == args.concurrency, "a warm rerun must not send the cached requests again"
        print(f"warm (all from the cache):         {warm:,.0f} req/s   ratio {warm / ideal:.3f}")
        transport_module.uses_keepalive_transport = lambda _url: False  # the openai client's stock transport
        stock, _ = asyncio.run(_drive(settings, Path(tmp) / "stock.sqlite", requests))
        print(f"cold, stock httpx transport:       {stock:,.0f} req/s   ratio {stock / ideal:.3f}   (for comparison)")
        print(f"server saw {server.stats().routes['POST /v1/chat/completions']:,} chat requests")


if __name__ == "__main__":
    main()
