"""The API's own documentation (``/openapi.json``, ``/docs``, ``/redoc``), behind the read key.

FastAPI's built-in documentation routes take no dependencies, so under ``--protect-reads`` they would
stay open; the app turns them off and serves these instead. A browser cannot send the bearer key for
the page itself: with protected reads, fetch the schema with the key (``curl -H "Authorization: ..."``).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse

from serve.deps import require_read_key

OPENAPI_URL = "/openapi.json"

docs_router = APIRouter(include_in_schema=False, dependencies=[Depends(require_read_key)])


@docs_router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    """The OpenAPI schema of this service."""
    return JSONResponse(request.app.openapi())


@docs_router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI over the schema."""
    root = request.scope.get("root_path", "")
    return get_swagger_ui_html(openapi_url=root + OPENAPI_URL, title=f"{request.app.title} - Swagger UI")


@docs_router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    """ReDoc over the schema."""
    root = request.scope.get("root_path", "")
    return get_redoc_html(openapi_url=root + OPENAPI_URL, title=f"{request.app.title} - ReDoc")
