"""HTTP plumbing under the openai client: which httpx client each endpoint gets.

For ``https`` endpoints (hosted APIs) and whenever a proxy applies, the openai client gets its own
kind of httpx client, with a connection pool sized to the engine's concurrency.

For plain ``http`` endpoints without a proxy (vLLM replicas, local servers: where a thousand requests
per second matter) it gets a :class:`LeanAsyncClient` over a :class:`KeepAliveTransport`, a deliberately
small HTTP/1.1 keep-alive transport on asyncio streams. Measured with benchmarks/bench_llm_engine.py on
2 cores at concurrency 256, a request costs the client process about 2.5-3.5 ms of CPU through httpx's
stock transport (httpcore scans its whole pool on every request) and about 0.55 ms on this path, openai
client and engine included. The openai client above it is unchanged: it still builds the requests,
sets the auth headers and maps statuses and transport failures to its exceptions.
"""

from __future__ import annotations

import asyncio
import datetime
import time
import urllib.request
from typing import Any
from urllib.parse import urlsplit

try:  # openai >= 3 ships httpx's successor under the name httpx2; older releases use httpx
    import httpx2 as httpx
except ImportError:  # pragma: no cover - depends on the installed openai major version
    import httpx  # type: ignore[no-redef]

_NO_BODY_STATUSES = {204, 304}
_DROPPED_REQUEST_HEADERS = {b"content-length", b"transfer-encoding"}


def uses_keepalive_transport(base_url: str) -> bool:
    """True for a plain-http URL that no proxy setting applies to."""
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        return False
    proxies = urllib.request.getproxies_environment()
    if not (proxies.get("http") or proxies.get("all")):
        return True
    return bool(urllib.request.proxy_bypass_environment(parts.hostname or "", proxies))


def make_http_client(
    base_url: str, *, max_connections: int, timeout_s: float, keepalive: bool = True
) -> httpx.AsyncClient:
    """The httpx client for one endpoint (see the module docstring for the choice of transport);
    ``keepalive=False`` always uses httpx's own transport."""
    if keepalive and uses_keepalive_transport(base_url):
        return LeanAsyncClient(timeout_s=timeout_s)
    from openai import DefaultAsyncHttpxClient

    limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections)
    return DefaultAsyncHttpxClient(limits=limits, timeout=timeout_s)


class LeanAsyncClient(httpx.AsyncClient):
    """An httpx client that hands each request straight to a :class:`KeepAliveTransport`.

    API calls use none of httpx's machinery between client and transport (auth flows, redirects,
    event hooks, the cookie jar); skipping it saves about a tenth of the CPU per request. A call that
    brings its own auth flow takes httpx's full path.
    """

    def __init__(self, *, timeout_s: float) -> None:
        self._keepalive = KeepAliveTransport()
        super().__init__(transport=self._keepalive, timeout=timeout_s, trust_env=False)

    async def send(
        self,
        request: httpx.Request,
        *,
        stream: bool = False,
        auth: Any = httpx.USE_CLIENT_DEFAULT,
        follow_redirects: Any = httpx.USE_CLIENT_DEFAULT,
    ) -> httpx.Response:
        if auth is not httpx.USE_CLIENT_DEFAULT and auth is not None:
            return await super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)
        start = time.perf_counter()
        response = await self._keepalive.handle_async_request(request)
        response.request = request
        response.elapsed = datetime.timedelta(seconds=time.perf_counter() - start)
        return response


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def reusable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        self.writer.close()


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """Minimal HTTP/1.1 client transport for plain-http servers: keep-alive pool, no proxies, no TLS.

    Responses are read whole (Content-Length, chunked, or until the server closes), which suits JSON
    APIs. Failures surface as httpx's own exceptions so the openai client maps them as usual.
    """

    def __init__(self, max_idle: int = 4096) -> None:
        self._idle: dict[tuple[str, int], list[_Connection]] = {}
        self._max_idle = max_idle

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "http":
            raise httpx.UnsupportedProtocol(f"KeepAliveTransport serves http only, not {url.scheme}")
        address = (url.host, url.port or 80)
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        connection = await self._checkout(address, timeouts.get("connect"), request)
        try:
            async with asyncio.timeout(timeouts.get("read")):
                connection.writer.write(_request_head(request, len(body)) + body)
                status, headers, content, keep_alive = await _read_response(connection.reader, request)
        except TimeoutError:
            connection.close()
            raise httpx.ReadTimeout("timed out waiting for the response", request=request) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            connection.close()
            raise httpx.RemoteProtocolError(f"connection failed mid-response: {exc!r}", request=request) from None
        except BaseException:  # cancelled: the connection is in an unknown state
            connection.close()
            raise
        if keep_alive and connection.reusable() and len(self._idle.get(address, ())) < self._max_idle:
            self._idle.setdefault(address, []).append(connection)
        else:
            connection.close()
        return httpx.Response(status, headers=headers, content=content, extensions={"http_version": b"HTTP/1.1"})

    async def _checkout(self, address: tuple[str, int], timeout: float | None, request: httpx.Request) -> _Connection:
        pool = self._idle.get(address)
        while pool:
            connection = pool.pop()
            if connection.reusable():
                return connection
            connection.close()
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(*address, limit=2**20)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {address[0]}:{address[1]}", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"cannot connect to {address[0]}:{address[1]}: {exc}", request=request) from None
        return _Connection(reader, writer)

    async def aclose(self) -> None:
        for pool in self._idle.values():
            for connection in pool:
                connection.close()
        self._idle.clear()


def _request_head(request: httpx.Request, content_length: int) -> bytes:
    lines = [b"%s %s HTTP/1.1" % (request.method.encode(), request.url.raw_path)]
    lines += [
        name + b": " + value for name, value in request.headers.raw if name.lower() not in _DROPPED_REQUEST_HEADERS
    ]
    if content_length or request.method not in ("GET", "HEAD"):
        lines.append(b"Content-Length: %d" % content_length)
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _read_response(
    reader: asyncio.StreamReader, request: httpx.Request
) -> tuple[int, list[tuple[str, str]], bytes, bool]:
    """Status, headers, body, and whether the connection may be reused."""
    version, status, headers = await _read_head(reader)
    while 100 <= status < 200:  # interim answers (100 Continue, 103 Early Hints) precede the real one
        version, status, headers = await _read_head(reader)
    fields = {name.lower(): value for name, value in headers}
    connection_options = {option.strip().lower() for option in fields.get("connection", "").split(",")}
    keep_alive = "close" not in connection_options and version == "HTTP/1.1"
    if request.method == "HEAD" or status in _NO_BODY_STATUSES:
        return status, headers, b"", keep_alive
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return status, headers, await _read_chunked(reader), keep_alive
    if "content-length" in fields:
        return status, headers, await reader.readexactly(int(fields["content-length"])), keep_alive
    return status, headers, await reader.read(), False


async def _read_head(reader: asyncio.StreamReader) -> tuple[str, int, list[tuple[str, str]]]:
    """HTTP version, status and headers of one response head."""
    lines = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    version, status_text = lines[0].split(" ", 2)[:2]
    headers = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers.append((name.strip(), value.strip()))
    return version, int(status_text), headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    chunks = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(chunks)
        chunks.append(await reader.readexactly(size))
        await reader.readexactly(2)
