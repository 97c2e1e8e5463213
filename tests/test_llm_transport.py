"""The keep-alive HTTP/1.1 transport under the openai client, against raw scripted servers, and the
stand-in running in its own process."""

from __future__ import annotations

import asyncio
import gzip
import json

import openai
import pytest
from llm_support import fast_settings, questions, run

from openmementos.llm import LLMEngine
from openmementos.llm.transport import KeepAliveTransport, httpx, uses_keepalive_transport
from openmementos.testing.openai_standin import OpenAIStandIn

COMPLETION = json.dumps(
    {"choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}], "usage": {}}
).encode()


def _chunked(body: bytes) -> bytes:
    half = len(body) // 2
    return b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:])


RESPONSES = {
    "content-length": b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(COMPLETION), COMPLETION),
    "chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + _chunked(COMPLETION),
    "until-close": b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + COMPLETION,
    "gzip": b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
    % (len(gzip.compress(COMPLETION)), gzip.compress(COMPLETION)),
}


async def _serve_once_per_connection(response: bytes, connections: list[int]):
    """A server that answers one request per connection, then closes it."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
        writer.write(response)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("framing", sorted(RESPONSES))
def test_response_framings_and_closed_connections(framing):
    async def main():
        connections: list[int] = []
        server = await _serve_once_per_connection(RESPONSES[framing], connections)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"
        async with server, LLMEngine(fast_settings(url, concurrency=1)) as engine:
            results = [await engine.complete(request) for request in questions(3)]
        return results, connections

    results, connections = run(main())
    assert [r.text for r in results] == ["hi"] * 3
    assert len(connections) == 3, "a connection the server closed is never reused"


def test_keepalive_reuses_connections_and_reports_errors_as_httpx_errors():
    async def main():
        transport = KeepAliveTransport()
        with OpenAIStandIn() as server:
            client = openai.AsyncOpenAI(
                base_url=server.base_url,
                api_key="k",
                max_retries=0,
                http_client=httpx.AsyncClient(transport=transport),
            )
            for _ in range(3):
                await client.models.list()
            idle = sum(len(pool) for pool in transport._idle.values())
            await client.close()
        with pytest.raises(httpx.ConnectError):
            await transport.handle_async_request(httpx.Request("GET", server.base_url + "/models"))
        return idle

    assert run(main()) == 1


def test_transport_choice(monkeypatch):
    monkeypatch.delenv("HTTP_PROXY", raising=False)
    monkeypatch.delenv("http_proxy", raising=False)
    monkeypatch.delenv("ALL_PROXY", raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    assert uses_keepalive_transport("http://gpu1:8000/v1")
    assert not uses_keepalive_transport("https://api.openai.com/v1")
    monkeypatch.setenv("http_proxy", "http://proxy:3128")
    monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
    assert not uses_keepalive_transport("http://gpu1:8000/v1"), "a proxied host goes through httpx's transport"
    assert uses_keepalive_transport("http://127.0.0.1:8000/v1")


def test_standin_in_its_own_process():
    with OpenAIStandIn(process=True) as server:

        async def main():
            async with LLMEngine(fast_settings(server.base_url)) as engine:
                return await engine.complete(questions(1)[0])

        assert run(main()).text.startswith("answer to")
        assert server.stats().chat_requests == 1
