"""Every failure of a request becomes a JSON answer ``{"error": <code>, "detail": <message>}``.

Known errors carry their own status and code (:mod:`serve.errors`, :mod:`serve.limits`,
:class:`~serve.bodylimit.BodyTooLarge`); request validation errors get a code from what failed
(a wrong JSON type, a limit of the schema, an unknown field, ...); anything unexpected is logged with
its traceback and answered 500 ``internal_error`` by :class:`CatchAllMiddleware`, with no traceback
or file path in the body. Details never show absolute file paths (:func:`serve.public.redact_paths`).
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embedkd.errors import EmbedkdError
from serve import limits
from serve.errors import LimitError, ServiceStateError, StorageFullError, StorageIOError
from serve.public import redact_paths
from serve.service import ReadOnlyError, UnknownFieldError
from serve.swap import StudentNotFoundError, SwapBusyError

logger = logging.getLogger(__name__)

STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    500: "internal_error",
    503: "unavailable",
}

# Schema limits (the hard caps in serve.schemas) answer with the same code as the service's own limits.
LIMIT_ERRORS = {
    ("k", "less_than_equal"): limits.K_OVER_LIMIT,
    ("queries", "too_long"): limits.TOO_MANY_QUERIES,
    ("texts", "too_long"): limits.TOO_MANY_TEXTS,
    ("documents", "too_long"): limits.TOO_MANY_DOCUMENTS,
}
ERROR_TYPES = {
    "json_invalid": "malformed_json",
    "extra_forbidden": "unknown_field",
    "missing": "missing_field",
    "string_too_long": limits.TEXT_TOO_LONG,
}


def error_response(status: int, code: str, detail, headers: dict | None = None) -> JSONResponse:
    """The JSON error answer; a string detail loses its file paths."""
    if isinstance(detail, str):
        detail = redact_paths(detail)
    return JSONResponse({"detail": detail, "error": code}, status_code=status, headers=headers)


def validation_code(errors: list[dict]) -> str:
    """The code of a 422 for pydantic ``errors``: decided by the first error.

    A limit of the schema → its limit code; a value of the wrong JSON type (strict schemas: ``"5"`` is
    not an integer, ``"true"`` not a boolean) → ``wrong_type``; a few others by their type; the rest
    ``invalid_request``.
    """
    if not errors:
        return "invalid_request"
    first = errors[0]
    kind, loc = first.get("type", ""), first.get("loc") or ()
    field = loc[-1] if loc and not isinstance(loc[-1], int) else (loc[-2] if len(loc) > 1 else None)
    if (field, kind) in LIMIT_ERRORS:
        return LIMIT_ERRORS[field, kind]
    if kind.endswith("_type"):
        return "wrong_type"
    return ERROR_TYPES.get(kind, "invalid_request")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers of known errors (the catch-all is :class:`CatchAllMiddleware`)."""

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        code = getattr(exc, "code", None) or STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
        return error_response(exc.status_code, code, exc.detail, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
        return error_response(422, validation_code(errors), errors)

    fixed = {
        UnknownFieldError: (400, "unknown_filter_field"),
        ReadOnlyError: (403, "read_only"),
        StudentNotFoundError: (404, "not_found"),
        SwapBusyError: (409, "conflict"),
    }
    for cls, (status, code) in fixed.items():
        app.add_exception_handler(cls, _fixed_handler(status, code))
    for cls in (LimitError, StorageFullError, StorageIOError, ServiceStateError, EmbedkdError):
        app.add_exception_handler(cls, _own_code_handler)


def _fixed_handler(status: int, code: str):
    async def handler(_request: Request, exc: Exception):
        return error_response(status, code, str(exc))

    return handler


async def _own_code_handler(request: Request, exc: Exception):
    """Errors that carry ``status`` and ``code`` (serve.errors); other EmbedkdErrors are a 400."""
    status, code = getattr(exc, "status", 400), getattr(exc, "code", "bad_request")
    if status >= 500:
        logger.error("%s %s: %s (%s)", request.method, request.url.path, code, exc)
    return error_response(status, code, str(exc))


class CatchAllMiddleware:
    """Answers any unexpected exception with a JSON 500 ``internal_error`` and logs its traceback.

    It sits inside the metrics middleware (which then counts the 500). Once a response has started
    nothing else can be sent, so the exception is re-raised for the server to close the connection.
    """

    BODY = json.dumps({"detail": "internal error; see the service log", "error": "internal_error"}).encode()

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(self.BODY)).encode()),
            ]
            await send({"type": "http.response.start", "status": 500, "headers": headers})
            await send({"type": "http.response.body", "body": self.BODY})
