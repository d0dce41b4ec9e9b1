"""Admin routes (the write API key, always): swap the served student, delete the query log.

Neither runs the teacher nor adds to its cache (the swap loads a student; the delete only removes).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool

from serve.deps import Service, Settings, require_write_key
from serve.public import public_model_name
from serve.querylog import QUERY_LOG_FILE, QueryLog
from serve.schemas import ERROR_RESPONSES, QueryLogDeleted, StudentSwapRequest, StudentSwapResponse
from serve.service import ReadOnlyError
from serve.swap import resolve_student_dir

admin_router = APIRouter(
    prefix="/admin", tags=["admin"], dependencies=[Depends(require_write_key)], responses=ERROR_RESPONSES
)


@admin_router.post("/student", response_model=StudentSwapResponse)
async def swap_student(body: StudentSwapRequest, request: Request, settings: Settings):
    """Load the student folder ``name`` (inside ``--students-dir``, safetensors only), check it against
    the index, warm it up, then serve queries with it; in-flight batches finish on the old one."""
    if settings.students_dir is None:
        raise HTTPException(409, "no --students-dir is configured on this service; hot swap over HTTP is off")
    folder = resolve_student_dir(settings.students_dir, body.name)
    answer = await run_in_threadpool(request.app.state.swapper.swap, folder)
    return {
        **answer,
        "student": public_model_name(answer["student"]),
        "previous": public_model_name(answer["previous"]),
    }


@admin_router.delete("/query-log", response_model=QueryLogDeleted)
async def delete_query_log(request: Request, svc: Service):
    """Delete every logged query and the teacher-cache vectors of those queries."""
    log: QueryLog | None = request.app.state.query_log
    if svc.read_only:
        raise ReadOnlyError("this service is read-only; delete the query log on the writer")
    own = log is None
    if own:  # logging is off now, but an earlier run may have left a log
        if not (svc.index_dir / QUERY_LOG_FILE).exists():
            return QueryLogDeleted(deleted=0, cache_vectors_deleted=0)
        log = QueryLog.in_index(
            svc.index_dir, svc.meta.teacher_id, svc.meta.dim, on_drop=svc.forget_teacher_queries
        )
    try:
        texts = await run_in_threadpool(log.clear)
    finally:
        if own:
            log.close()
    forgotten = await run_in_threadpool(svc.forget_teacher_queries, texts)
    return QueryLogDeleted(deleted=len(texts), cache_vectors_deleted=forgotten)
