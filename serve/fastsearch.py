"""A direct path for ``POST /search``: the same handler, without FastAPI's per-request machinery.

At concurrency 1 a search costs a few milliseconds of encoding and search, and FastAPI's routing,
dependency solving and body handling add a measurable share on top. This pure ASGI layer sits inside
the service's own middleware (metrics, body limit, catch-all, so they apply unchanged) and answers a
well-formed search itself: it reads the body, validates it with the route's own model
(:class:`~serve.schemas.SearchRequest`), checks the key exactly as the route's dependency does, and calls
the route's handler (:func:`serve.routes.search`). Anything else — another path or method, a body that
does not validate, a missing or wrong key, a limit the request breaks, any error in the handler —
goes on to FastAPI with the body replayed, so every error keeps its one canonical answer (status, code,
message) and the OpenAPI description stays the route's.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.bodylimit import BodyTooLarge, answer_too_large
from serve.deps import SearchState, check_key
from serve.schemas import SearchRequest

logger = logging.getLogger(__name__)

PATH = "/search"
JSON_TYPES = (b"application/json", b"application/json; charset=utf-8")


class FastSearchMiddleware:
    """Answer well-formed ``POST /search`` requests directly (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._route: Any = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", ()))
        if headers.get(b"content-type", b"").lower() not in JSON_TYPES:
            await self.app(scope, receive, send)
            return
        try:
            body = await _read_body(receive)
        except _Disconnected:
            return  # the client went away: nobody to answer
        except BodyTooLarge as exc:  # a chunked body past the limit: the limit's own answer
            await answer_too_large(send, exc)
            return
        if not await self._answer(scope, receive, body, headers.get(b"authorization"), send):
            await self.app(scope, _replayer(body, receive), send)

    async def _answer(
        self, scope: Scope, receive: Receive, body: bytes, authorization: bytes | None, send: Send
    ) -> bool:
        """Run the handler; False (nothing sent) when FastAPI should answer instead."""
        from serve.routes import search

        app = scope["app"]
        state = app.state
        settings = state.settings
        try:
            request = SearchRequest.model_validate_json(body)
            if settings.protect_reads:
                check_key(settings, _bearer(authorization))
            deps = SearchState(
                state.service, state.batcher, settings, state.metrics, getattr(state, "monitor", None)
            )
            response = await search(request, deps)
        except (ValidationError, HTTPException):
            return False  # FastAPI gives the canonical 4xx
        except Exception:  # noqa: BLE001 - the route's exception handlers map it; rare, so run it there
            logger.debug("fast /search path fell back to the route", exc_info=True)
            return False
        scope["route"] = self._search_route()  # the metrics label the request as the route would
        await response(scope, receive, send)
        return True

    def _search_route(self) -> Any:
        """The route's own definition (what FastAPI puts in ``scope["route"]`` when it routes a search)."""
        if self._route is None:
            from serve.routes import search_router

            self._route = next(
                r for r in search_router.routes if getattr(r, "path", None) == PATH and "POST" in r.methods
            )
        return self._route


def _bearer(authorization: bytes | None) -> HTTPAuthorizationCredentials | None:
    """``Authorization: Bearer <key>`` as FastAPI's ``HTTPBearer(auto_error=False)`` reads it."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.decode("latin-1").partition(" ")
    if scheme.lower() != "bearer" or not credentials:
        return None
    return HTTPAuthorizationCredentials(scheme=scheme, credentials=credentials)


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client went away: nothing to answer
            raise _Disconnected
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


class _Disconnected(Exception):
    pass


def _replayer(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives ``body`` once, then whatever the connection sends (a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
