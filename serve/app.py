"""The FastAPI app factory: models and index are loaded in the lifespan, never at import.

``embedkd serve`` opens the :class:`~serve.service.SearchService` itself (so start-up errors are one
clean line) and passes it in; ``uvicorn --factory serve.app:create_app_from_env`` builds everything
from ``EMBEDKD_*`` environment variables, which is how N replicas are started behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from embedkd.errors import EmbedkdError
from serve.batcher import MicroBatcher
from serve.metrics import Metrics, MetricsMiddleware
from serve.routes import documents_router, info_router, search_router
from serve.service import ReadOnlyError, SearchService, ServiceOptions, UnknownFieldError
from serve.settings import ServeSettings

logger = logging.getLogger(__name__)


def open_service(settings: ServeSettings) -> SearchService:
    """Open the index directory with the configured models (checks dims and teacher identity)."""
    if settings.threads:
        set_threads(settings.threads)
    options = ServiceOptions(
        read_only=settings.read_only,
        mmap=settings.mmap,
        snapshot_every=settings.snapshot_every,
        overfetch=settings.overfetch,
        cache_dir=settings.cache_dir,
        device=settings.device,
        quantize=settings.quantize,
    )
    return SearchService.open(settings.index_dir, settings.student, settings.teacher, options)


def set_threads(n: int) -> None:
    """CPU threads of this process for encoding (torch) and search (FAISS)."""
    import faiss
    import torch

    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)


def create_app(settings: ServeSettings, service: SearchService | None = None) -> FastAPI:
    """Build the app. ``service`` (already open) is used as is; otherwise the lifespan opens one.

    The app owns the service either way: its lifespan closes it (snapshotting pending writes).
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = service or await run_in_threadpool(open_service, settings)
        batcher = MicroBatcher(
            svc.encode_queries, settings.batch_max_size, settings.batch_max_wait_ms, metrics.observe_batch
        )
        await batcher.start()
        await batcher.submit(["warm-up"])  # first forward pass allocates; keep it off the first request
        app.state.service, app.state.batcher = svc, batcher
        follower = None
        if svc.read_only and settings.refresh_seconds > 0:
            follower = asyncio.create_task(_follow(svc, settings.refresh_seconds))
        logger.info("serving %s: %s", settings.index_dir, svc.stats())
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await follower
            await batcher.stop()
            await run_in_threadpool(svc.close)

    app = FastAPI(
        title="embedkd search",
        summary="Asymmetric search: documents embedded by the teacher, queries by the distilled student.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings, app.state.metrics = settings, metrics
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    app.include_router(search_router)
    app.include_router(documents_router)
    app.include_router(info_router)
    _install_error_handlers(app)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory serve.app:create_app_from_env`` (settings from ``EMBEDKD_*``)."""
    return create_app(ServeSettings())


async def _follow(svc: SearchService, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            n = await run_in_threadpool(svc.sync)
            if n:
                logger.info("replica caught up %d write(s)", n)
        except Exception:  # noqa: BLE001 - a replica keeps serving what it has
            logger.exception("replica sync failed")


def _error(status: int, code: str, detail) -> JSONResponse:
    return JSONResponse({"detail": detail, "error": code}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    codes = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 409: "conflict"}

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException):
        response = _error(exc.status_code, codes.get(exc.status_code, "http_error"), exc.detail)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError):
        errors = [{k: v for k, v in e.items() if k in ("type", "loc", "msg")} for e in exc.errors()]
        return _error(422, "invalid_request", errors)

    @app.exception_handler(UnknownFieldError)
    async def unknown_field(_request: Request, exc: UnknownFieldError):
        return _error(400, "unknown_filter_field", str(exc))

    @app.exception_handler(ReadOnlyError)
    async def read_only(_request: Request, exc: ReadOnlyError):
        return _error(403, "read_only", str(exc))

    @app.exception_handler(EmbedkdError)
    async def embedkd_error(_request: Request, exc: EmbedkdError):
        return _error(400, "bad_request", str(exc))
