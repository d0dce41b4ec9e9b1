"""Request-body size limit: a pure ASGI middleware that runs before routing, parsing and the key check.

A request whose ``Content-Length`` is over the limit is answered 413 ``body_too_large`` without
reading a byte of its body. A body without a length (``Transfer-Encoding: chunked``) or one that
outgrows its length is counted as it streams in, and reading stops at the limit: the route's body read
fails with :class:`BodyTooLarge`, which the error handlers answer with the same JSON 413.

Starlette's own ``RequestBodyLimitMiddleware`` is not used: it calls the app before checking the
length (so a GET with a huge body reaches the key check) and answers in plain text.
"""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

BODY_TOO_LARGE = "body_too_large"


class BodyTooLarge(HTTPException):
    """The request body is over ``--max-body-bytes`` (answered 413 ``body_too_large``)."""

    code = BODY_TOO_LARGE

    def __init__(self, limit: int, size: int | None = None) -> None:
        said = f"{size} bytes" if size is not None else f"more than {limit} bytes"
        detail = f"request body of {said} is over this service's limit of {limit} bytes"
        # the rest of the body stays unread: the connection cannot carry another request
        super().__init__(413, detail, headers={"Connection": "close"})


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` (see the module docstring)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > self.max_bytes:
            await answer_too_large(send, BodyTooLarge(self.max_bytes, length))
            return
        seen, started = 0, False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge as exc:  # read outside a route's body parsing: answer here
            if started:
                raise
            await answer_too_large(send, exc)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None  # the HTTP server refuses a malformed length before the app runs
    return None


async def answer_too_large(send: Send, exc: BodyTooLarge) -> None:
    """Send the 413 JSON answer of ``exc`` (closing the connection: the rest of the body stays unread)."""
    body = json.dumps({"detail": exc.detail, "error": exc.code}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
    ]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
