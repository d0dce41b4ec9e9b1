"""The FastAPI app factory: models and index are loaded in the lifespan, never at import.

``embedkd serve`` opens the :class:`~serve.service.SearchService` itself (so start-up errors are one
clean line) and passes it in; ``uvicorn --factory serve.app:create_app_from_env`` builds everything
from ``EMBEDKD_*`` environment variables, which is how N replicas are started behind a load balancer.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool

from embedkd.errors import ConfigError
from serve.batcher import MicroBatcher
from serve.bodylimit import BodyLimitMiddleware
from serve.fastsearch import FastSearchMiddleware
from serve.handlers import CatchAllMiddleware, install_error_handlers
from serve.limits import TeacherTokenCounter
from serve.metrics import Metrics, MetricsMiddleware
from serve.monitor import AlignmentMonitor, MonitorConfig
from serve.querylog import QueryLog
from serve.routes import documents_router, info_router, search_router
from serve.routes_admin import admin_router
from serve.routes_docs import docs_router
from serve.service import SearchService, ServiceOptions, open_search_service
from serve.settings import ServeSettings
from serve.swap import StudentSwapper, StudentWatcher
from serve.threads import set_threads

logger = logging.getLogger(__name__)


def open_service(settings: ServeSettings) -> SearchService:
    """Open the index directory with the configured models (checks dims and teacher identity)."""
    if settings.threads:
        set_threads(settings.threads)
    options = ServiceOptions(
        read_only=settings.read_only,
        mmap=settings.mmap,
        snapshot_every=settings.snapshot_every,
        snapshot_retry_seconds=settings.snapshot_retry_seconds,
        overfetch=settings.overfetch,
        max_candidates=settings.max_candidates,
        verify=settings.verify,
        cache_dir=settings.cache_dir,
        device=settings.device,
        quantize=settings.quantize,
        backend=settings.backend,
        threads=settings.threads,
        store=settings.store,
        uri=settings.uri,
    )
    service = open_search_service(settings.index_dir, settings.student, settings.teacher, options)
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
        log = QueryLog.in_index(  # a query trimmed from the log leaves the teacher cache too
            svc.index_dir,
            svc.meta.teacher_id,
            svc.meta.dim,
            max_rows=settings.query_log_max,
            on_drop=svc.forget_teacher_queries,
        )
        log.forget_trimmed()  # those a crash left waiting
    config = MonitorConfig(
        sample=settings.monitor_sample,
        window=settings.monitor_window,
        alert=settings.monitor_alert,
        budget_per_minute=settings.monitor_budget,
        queue_size=settings.monitor_queue,
        seed=settings.monitor_seed,
        nice=settings.monitor_nice,
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


def create_app(settings: ServeSettings, service: SearchService | None = None) -> FastAPI:
    """Build the app. ``service`` (already open) is used as is; otherwise the lifespan opens one.

    The app owns the service either way: its lifespan closes it (snapshotting pending writes).
    Requests pass, outermost first: metrics, the body-size limit (before any route or key check),
    the catch-all for unexpected errors (JSON 500), then the routes and their error handlers.
    """
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        svc = service or await run_in_threadpool(open_service, settings)
        batcher = MicroBatcher(
            svc.encode_queries,
            settings.batch_max_size,
            settings.batch_max_wait_ms,
            metrics.observe_batch,
            inline_max=settings.batch_inline_max,
        )
        await batcher.start()
        await batcher.submit(["warm-up"])  # first forward pass allocates; keep it off the first request
        # The models and libraries loaded so far are millions of long-lived objects: frozen, the garbage
        # collector no longer walks them, so a full collection pauses requests for far less.
        gc.freeze()
        monitor, log = open_monitor(settings, svc, metrics)
        swapper = StudentSwapper(
            svc,
            device=settings.device,
            quantize=settings.quantize,
            backend=settings.backend,
            threads=settings.threads,
            monitor=monitor,
        )
        app.state.service, app.state.batcher = svc, batcher
        app.state.teacher_tokens = TeacherTokenCounter(svc.teacher)
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
                await run_in_threadpool(log.close)  # may delete trimmed queries' cache vectors
            await run_in_threadpool(svc.close)

    app = FastAPI(
        title="embedkd search",
        summary="Asymmetric search: documents embedded by the teacher, queries by the distilled student.",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=None,  # served by routes_docs, behind the read key
        docs_url=None,
        redoc_url=None,
    )
    app.state.settings, app.state.metrics = settings, metrics
    if settings.fast_search:  # innermost: well-formed searches skip FastAPI's machinery
        app.add_middleware(FastSearchMiddleware)
    app.add_middleware(CatchAllMiddleware)  # the last added runs first
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    for router in (search_router, documents_router, info_router, admin_router, docs_router):
        app.include_router(router)
    install_error_handlers(app)
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
