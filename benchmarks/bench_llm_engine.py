"""Throughput of the LLM engine against the loopback OpenAI stand-in (running in its own process).

Prints achieved requests/s against the ideal (concurrency / latency) for
  * a cold run: every request goes to the server through the real openai client and is written to the
    response cache (target: ratio >= 0.9 at 200 ms latency and concurrency 256, on 2 cores);
  * a warm rerun of the same requests: every answer comes from the cache, nothing is sent;
  * the cold run again through the openai client's stock httpx transport, for comparison.
It also prints the CPU time per request of the client and of the stand-in, and the machine's load:
the client is one Python process, so its CPU time per request bounds the achievable rate.

    .venv/bin/python benchmarks/bench_llm_engine.py [--requests 8192] [--concurrency 256] [--latency 0.2]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import tempfile
import time
from pathlib import Path

import support_path  # noqa: F401  (tests/ on the path, for `support`)
from support.openai_standin import Faults, OpenAIStandIn

from openmementos.llm import ChatRequest, EngineStats, LLMEngine, LLMSettings, PriceTable, ResponseCache, relax_gc

PRICES = PriceTable({"bench-model": (0.0, 0.0), "warmup": (0.0, 0.0)})


@dataclasses.dataclass
class Run:
    rate: float
    client_cpu_ms: float
    server_cpu_ms: float
    stats: EngineStats


def _requests(count: int, model: str = "bench-model") -> list[ChatRequest]:
    return [
        ChatRequest(model=model, messages=[{"role": "user", "content": f"Question {i}: what is {i} + {i}?"}])
        for i in range(count)
    ]


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _drive(settings: LLMSettings, cache_path: Path, requests: list[ChatRequest], server_pid: int) -> Run:
    with ResponseCache(cache_path) as cache:
        async with LLMEngine(settings, cache=cache, prices=PRICES) as engine:
            # An untimed wave first opens the connections (its answers go to the cache too).
            await asyncio.gather(*(engine.complete(r) for r in _requests(settings.concurrency, "warmup")))
            # Callers keep twice `concurrency` requests outstanding, as the annotate stage's window does.
            pending = iter(requests)
            done = 0

            async def caller() -> None:
                nonlocal done
                for request in pending:
                    await engine.complete(request)
                    done += 1

            server_cpu, client_cpu, start = _process_cpu_s(server_pid), time.process_time(), time.perf_counter()
            await asyncio.gather(*(caller() for _ in range(2 * settings.concurrency)))
            elapsed = time.perf_counter() - start
            assert done == len(requests)
            return Run(
                rate=len(requests) / elapsed,
                client_cpu_ms=(time.process_time() - client_cpu) / len(requests) * 1000,
                server_cpu_ms=(_process_cpu_s(server_pid) - server_cpu) / len(requests) * 1000,
                stats=engine.stats,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=8192)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--latency", type=float, default=0.2, help="stand-in latency per request, seconds")
    args = parser.parse_args()
    relax_gc()  # as the annotate and segment commands do
    ideal = args.concurrency / args.latency
    requests = _requests(args.requests)
    print(f"{args.requests} requests, concurrency {args.concurrency}, latency {args.latency * 1000:.0f} ms")
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} (other processes compete for the CPU)")
    print(f"ideal (concurrency / latency): {ideal:,.0f} req/s\n")

    def show(label: str, run: Run, note: str = "") -> None:
        print(
            f"{label:<34} {run.rate:>7,.0f} req/s  ratio {run.rate / ideal:.3f}  "
            f"cpu/request client {run.client_cpu_ms:.3f} ms, stand-in {run.server_cpu_ms:.3f} ms  {note}"
        )

    with OpenAIStandIn(Faults(latency_s=args.latency), process=True) as server, tempfile.TemporaryDirectory() as tmp:
        assert server.pid is not None
        settings = LLMSettings(base_urls=(server.base_url,), api_key="bench-key", concurrency=args.concurrency)
        cache_path = Path(tmp) / "llm_cache.sqlite"
        cold = asyncio.run(_drive(settings, cache_path, requests, server.pid))
        assert cold.stats.sent == args.requests + args.concurrency and cold.stats.failed == 0
        show("cold (sent, answers cached)", cold, "(target ratio >= 0.9)")
        warm = asyncio.run(_drive(settings, cache_path, requests, server.pid))
        assert warm.stats.sent == 0, "a warm rerun must not send cached requests again"
        show("warm (all from the cache)", warm)
        stock_settings = dataclasses.replace(settings, fast_http=False)
        stock = asyncio.run(_drive(stock_settings, Path(tmp) / "stock.sqlite", requests, server.pid))
        show("cold, openai's stock transport", stock, "(for comparison)")


if __name__ == "__main__":
    main()
