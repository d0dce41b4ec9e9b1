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

from embedkd.errors import ConfigError, EmbedkdError
from serve.batcher import MicroBatcher
from serve.metrics import Metrics, MetricsMiddleware
from serve.monitor import AlignmentMonitor, MonitorConfig
from serve.querylog import QueryLog
from serve.routes import documents_router, info_router, search_router
from serve.routes_admin import admin_router
from serve.service import ReadOnlyError, SearchService, ServiceOptions, UnknownFieldError
from serve.settings import ServeSettings
from serve.swap import StudentNotFoundError, StudentSwapper, StudentWatcher, SwapBusyError

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
        backend=settings.backend,
        threads=settings.threads,
    )
    service = SearchService.open(settings.index_dir, settings.student, settings.teacher, options)
    if settings.monitor_sample > 0 and service.teacher is None:
        service.close()
        raise ConfigError(
            f"--monitor-sample {settings.monitor_sample} needs the teacher: pass --teacher "
            f"{service.meta.teacher_name!r} (with --read-only on a replica)"
        )
    return service


def open_monitor(
    settings: ServeSettings, svc: SearchService, metrics: Metrics
) -> tuple[AlignmentMonitor | None, QueryLog | None]:
    """The alignment monitor (started) and its query log, or ``(None, None)`` when sampling is off.

    Sampled queries leave a trace on disk (log rows, teacher-cache vectors) only where the service
    can delete it again: with the query log on and a writable index directory.
    """
    if settings.monitor_sample <= 0:
        return None, None
    log = None
    if settings.query_log and svc.read_only:
        logger.warning("read-only service: the query log is off (the monitor keeps only its figures)")
    elif settings.query_log:
        log = QueryLog.in_index(
            svc.index_dir, svc.meta.teacher_id, svc.meta.dim, max_rows=settings.query_log_max
        )
    config = MonitorConfig(
        sample=settings.monitor_sample,
        window=settings.monitor_window,
        alert=settings.monitor_alert,
        budget_per_minute=settings.monitor_budget,
        queue_size=settings.monitor_queue,
        seed=settings.monitor_seed,
    )
    cached = log is not None
    monitor = AlignmentMonitor(
        config,
        teacher=lambda texts: svc.embed_teacher_queries(texts, cached=cached),
        search=lambda vectors, k: [[hit.id for hit in row] for row in svc.search(vectors, k)],
        log=log,
        forget=svc.forget_teacher_queries if cached else None,
        metrics=metrics.enable_monitor(),
    )
    monitor.start()
    logger.info("alignment monitor on: %s, query log %s", config, "on" if log else "off")
    return monitor, log


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
        monitor, log = open_monitor(settings, svc, metrics)
        swapper = StudentSwapper(svc, device=settings.device, quantize=settings.quantize, monitor=monitor)
        app.state.service, app.state.batcher = svc, batcher
        app.state.monitor, app.state.query_log, app.state.swapper = monitor, log, swapper
        tasks = []
        if svc.read_only and settings.refresh_seconds > 0:
            tasks.append(asyncio.create_task(_follow(svc, settings.refresh_seconds)))
        if settings.watch_student is not None:
            watcher = StudentWatcher(settings.watch_student, swapper, settings.watch_interval)
            tasks.append(asyncio.create_task(watcher.run()))
        logger.info("serving %s: %s", settings.index_dir, svc.stats())
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await batcher.stop()
            if monitor is not None:
                await run_in_threadpool(monitor.stop)
            if log is not None:
                log.close()
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
    app.include_router(admin_router)
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

    @app.exception_handler(StudentNotFoundError)
    async def no_student(_request: Request, exc: StudentNotFoundError):
        return _error(404, "not_found", str(exc))

    @app.exception_handler(SwapBusyError)
    async def swap_busy(_request: Request, exc: SwapBusyError):
        return _error(409, "conflict", str(exc))

    @app.exception_handler(EmbedkdError)
    async def embedkd_error(_request: Request, exc: EmbedkdError):
        return _error(400, "bad_request", str(exc))
