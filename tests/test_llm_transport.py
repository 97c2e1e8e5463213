"""The keep-alive HTTP/1.1 transport under the openai client, against raw scripted servers, and the
stand-in running in its own process."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
from collections.abc import Callable

import openai
import pytest
from support.llm_helpers import fast_settings, questions, run
from support.openai_standin import OpenAIStandIn

from openmementos.llm import LLMEngine
from openmementos.llm.transport import KeepAliveTransport, httpx, uses_keepalive_transport

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


async def _serve(respond: Callable[[int], bytes | None], connections: list[int], *, close: bool = False):
    """A scripted HTTP/1.1 server: the n-th request (counted over all connections, from 1) is answered
    with the raw bytes ``respond(n)``, or not at all when None. ``close``: one request per connection."""
    arrivals = itertools.count(1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":")[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length")
                )
                await reader.readexactly(length)
                answer = respond(next(arrivals))
                if answer is None:
                    await reader.read()  # hold the request until the client gives up
                    return
                writer.write(answer)
                await writer.drain()
                if close:
                    return
        except asyncio.IncompleteReadError:
            return  # the client closed the connection
        finally:
            writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _url(server: asyncio.Server) -> str:
    return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1"


async def _three_answers(server: asyncio.Server) -> list[str]:
    async with server, LLMEngine(fast_settings(_url(server), concurrency=1)) as engine:
        return [(await engine.complete(request)).text for request in questions(3)]


@pytest.mark.parametrize("framing", sorted(RESPONSES))
def test_response_framings_and_closed_connections(framing):
    async def main():
        connections: list[int] = []
        server = await _serve(lambda _n: RESPONSES[framing], connections, close=True)
        return await _three_answers(server), connections

    texts, connections = run(main())
    assert texts == ["hi"] * 3
    assert len(connections) == 3, "a connection the server closed is never reused"


def test_connection_close_is_honoured_even_if_the_server_keeps_the_socket_open():
    answer = b"HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: %d\r\n\r\n%s" % (
        len(COMPLETION),
        COMPLETION,
    )

    async def main():
        connections: list[int] = []
        server = await _serve(lambda _n: answer, connections)
        return await _three_answers(server), connections

    texts, connections = run(main())
    assert texts == ["hi"] * 3
    assert len(connections) == 3


def test_interim_1xx_answers_are_skipped_and_the_connection_stays_in_step():
    answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n" + RESPONSES["chunked"]

    async def main():
        connections: list[int] = []
        server = await _serve(lambda _n: answer, connections)
        return await _three_answers(server), connections

    texts, connections = run(main())
    assert texts == ["hi"] * 3
    assert len(connections) == 1, "one kept-alive connection serves every request"


def test_a_timed_out_connection_is_closed_not_reused():
    async def main():
        connections: list[int] = []
        server = await _serve(lambda n: None if n == 1 else RESPONSES["content-length"], connections)
        transport = KeepAliveTransport()
        async with server, httpx.AsyncClient(transport=transport, timeout=0.2) as client:
            with pytest.raises(httpx.ReadTimeout):
                await client.post(_url(server) + "/chat/completions", content=b"{}")
            assert transport._idle.get(("127.0.0.1", server.sockets[0].getsockname()[1]), []) == []
            response = await client.post(_url(server) + "/chat/completions", content=b"{}")
        return response, connections

    response, connections = run(main())
    assert response.json()["choices"][0]["message"]["content"] == "hi"
    assert len(connections) == 2


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
