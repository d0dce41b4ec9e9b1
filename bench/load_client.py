"""The load benchmarks' HTTP client: one keep-alive HTTP/1.1 connection, JSON in and out, on asyncio.

The benchmarks time the service as a client sees it, so the client's own cost lands in every
latency they report. httpx's ``AsyncClient`` costs about 2 ms of CPU per request on the benchmark
machine (h11 and anyio layers, the request head and body sent as two packets, and httpcore retrying
``import sniffio`` — a scan of ``sys.path`` — four times per request when sniffio is not installed);
at concurrency 1 on an 11 ms query that alone is a fifth of the budget the service is judged on.
This client writes each request in one packet and reads the answer by its ``Content-Length``: about
0.15 ms per request. It speaks only what the service answers (``Content-Length`` bodies, keep-alive).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit


class HTTPStatusError(RuntimeError):
    """The server answered with an error status (4xx, 5xx)."""


class JSONConnection:
    """One keep-alive connection to ``url`` for JSON ``POST`` requests, one request at a time.

    Args:
        url: ``http://host:port`` of the server (no TLS).
        timeout: seconds one request may take before :class:`TimeoutError`.
    """

    def __init__(self, url: str, timeout: float = 300) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"need an http://host:port URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.timeout = timeout
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: object) -> bytes:
        """``POST`` ``payload`` as JSON to ``path``; the response body.

        Raises:
            HTTPStatusError: the status is 400 or more (the message holds the start of the body).
        """
        body = json.dumps(payload).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        ).encode()
        if hasattr(asyncio, "timeout"):  # Python 3.11+: no extra task per request, unlike wait_for
            async with asyncio.timeout(self.timeout):
                status, data = await self._exchange(head + body)
        else:
            status, data = await asyncio.wait_for(self._exchange(head + body), self.timeout)
        if status >= 400:
            raise HTTPStatusError(f"POST {path}: HTTP {status}: {data[:300]!r}")
        return data

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(request)
        try:  # the whole head in one read: status line and headers
            head = await self._reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            await self.close()
            raise ConnectionError(f"{self.host}:{self.port} closed the connection") from None
        status_line, *lines = head[:-4].split(b"\r\n")
        status = int(status_line.split()[1])
        length, close = None, False
        for line in lines:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = b"close" in value.lower()
        if length is None:
            raise ValueError(f"response of HTTP {status} has no Content-Length (chunked bodies unsupported)")
        data = await self._reader.readexactly(length)
        if close:
            await self.close()
        return status, data

    async def close(self) -> None:
        """Close the connection (the next request opens a new one)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except (ConnectionError, OSError):
                pass
