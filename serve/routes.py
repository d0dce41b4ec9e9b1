"""HTTP routes, one router per concern: search, documents (writes), and service info."""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from serve import limits
from serve.deps import (
    Batcher,
    Credentials,
    MetricsDep,
    Monitor,
    SearchDeps,
    Service,
    Settings,
    check_key,
    require_metrics_key,
    require_read_key,
    require_write_key,
)
from serve.public import public_model_name, redact_all
from serve.schemas import (
    ERROR_RESPONSES,
    DeleteResponse,
    DocumentOut,
    EmbedRequest,
    EmbedResponse,
    Health,
    SearchRequest,
    SearchResponse,
    UpsertRequest,
    UpsertResponse,
)
from serve.store import Document

search_router = APIRouter(
    tags=["search"], dependencies=[Depends(require_read_key)], responses=ERROR_RESPONSES
)
documents_router = APIRouter(tags=["documents"], responses=ERROR_RESPONSES)
info_router = APIRouter(tags=["service"])


async def _check_teacher_budget(request: Request, texts: list[str], limit: int) -> None:
    counter: limits.TeacherTokenCounter = request.app.state.teacher_tokens
    await run_in_threadpool(counter.check, texts, limit)


@search_router.post("/search", response_model=SearchResponse, response_model_exclude_none=True)
async def search(body: SearchRequest, deps: SearchDeps):
    """Embed the query (or queries) with the student and return the top ``k`` documents.

    ``partial`` flags a query whose filter rejected so many hits that the search stopped at
    ``--max-candidates`` examined with fewer than ``k`` matches (more may exist further away)."""
    svc, batcher, settings, monitor = deps.service, deps.batcher, deps.settings, deps.monitor
    texts = [body.query] if body.query is not None else list(body.queries or [])
    limits.check_count("k", body.k, settings.max_k, limits.K_OVER_LIMIT, "--max-k")
    limits.check_count("queries", len(texts), settings.max_queries, limits.TOO_MANY_QUERIES, "--max-queries")
    limits.check_results(
        len(texts), body.k, body.include_text, settings.max_results, settings.max_text_results
    )
    svc.check_filter(body.filter)
    start = time.perf_counter()

    def search_rows(vectors, truncated):
        # Runs in the encoding thread right after the forward pass: no second thread hand-off.
        encoded = time.perf_counter()
        found = svc.search_detailed(vectors, body.k, body.filter, body.include_text)
        searched = time.perf_counter()
        if monitor is not None:  # a sample only joins a bounded queue: never waits
            monitor.offer(texts, vectors, svc.last_encoder_generation())
        return found, truncated, encoded, searched

    found, truncated, encoded, searched = await batcher.submit(texts, search_rows)
    done = time.perf_counter()
    deps.metrics.search_seconds.observe(searched - encoded)
    rows = [[_hit(h, body.include_text) for h in row] for row in found.hits]
    single = body.query is not None
    # Plain JSON of the documented SearchResponse: FastAPI would validate the model it was just built
    # from and serialise it again (about a tenth of a millisecond per search of the c1 budget).
    return JSONResponse(
        {
            "results": rows[0] if single else rows,
            "truncated": truncated[0] if single else truncated,
            "partial": found.partial[0] if single else found.partial,
            "k": body.k,
            "took_ms": round((done - start) * 1000, 3),
            "encode_ms": round((encoded - start) * 1000, 3),
            "search_ms": round((searched - encoded) * 1000, 3),
        }
    )


def _hit(hit, include_text: bool) -> dict:
    """One :class:`~serve.schemas.SearchHit` as JSON, ``None`` fields left out."""
    out = {"id": hit.id, "score": float(hit.score)}
    if include_text:
        if hit.title is not None:
            out["title"] = hit.title
        if hit.text is not None:
            out["text"] = hit.text
    if hit.metadata:
        out["metadata"] = hit.metadata
    return out


@search_router.post("/embed", response_model=EmbedResponse, response_model_exclude_none=True)
async def embed(
    body: EmbedRequest,
    request: Request,
    creds: Credentials,
    svc: Service,
    batcher: Batcher,
    settings: Settings,
    metrics: MetricsDep,
):
    """Embed texts: ``role=query`` with the student; ``role=document`` with the teacher (cached), which
    is a write: it needs the API key and fits the teacher-token budget."""
    if body.role == "document":
        check_key(settings, creds)
    limits.check_count("texts", len(body.texts), settings.max_queries, limits.TOO_MANY_TEXTS, "--max-queries")
    if body.role == "query":
        vectors, truncated = await batcher.submit(body.texts)
        return EmbedResponse(
            embeddings=vectors.tolist(),
            dim=svc.meta.dim,
            role="query",
            model=public_model_name(svc.encoder.name),
            truncated=truncated,
        )
    if svc.teacher is None:
        raise HTTPException(409, "no teacher is configured on this service; role=document is unavailable")
    await _check_teacher_budget(request, body.texts, settings.max_teacher_tokens)
    start = time.perf_counter()
    vectors = await run_in_threadpool(svc.embed_documents, body.texts)
    metrics.encode_seconds.labels("document").observe(time.perf_counter() - start)
    return EmbedResponse(
        embeddings=vectors.tolist(),
        dim=svc.meta.dim,
        role="document",
        model=public_model_name(svc.meta.teacher_id),
    )


@search_router.get("/documents/{doc_id:path}", response_model=DocumentOut)
async def get_document(doc_id: str, svc: Service):
    """One stored document."""
    doc = await run_in_threadpool(svc.store.get, doc_id)
    if doc is None:
        raise HTTPException(404, f"no document {doc_id!r}")
    return DocumentOut(id=doc.id, title=doc.title, text=doc.text, metadata=doc.metadata)


@documents_router.post("/documents", response_model=UpsertResponse, dependencies=[Depends(require_write_key)])
async def upsert_documents(
    body: UpsertRequest, request: Request, svc: Service, settings: Settings, metrics: MetricsDep
):
    """Insert or replace documents; the teacher embeds them. Acknowledged = durable."""
    limits.check_count(
        "documents", len(body.documents), settings.max_documents, limits.TOO_MANY_DOCUMENTS, "--max-documents"
    )
    docs = [Document(d.id, d.text, d.title, d.metadata) for d in body.documents]
    if svc.teacher is not None:  # without one the service refuses the write as read-only
        await _check_teacher_budget(request, [d.embed_text for d in docs], settings.max_teacher_tokens)
    n = await run_in_threadpool(svc.upsert, docs)
    metrics.writes.labels("upsert").inc(n)
    return UpsertResponse(upserted=n, ids=[d.id for d in docs])


@documents_router.delete(
    "/documents/{doc_id:path}", response_model=DeleteResponse, dependencies=[Depends(require_write_key)]
)
async def delete_document(doc_id: str, svc: Service, metrics: MetricsDep):
    """Delete one document (durable once acknowledged)."""
    if not await run_in_threadpool(svc.delete, doc_id):
        raise HTTPException(404, f"no document {doc_id!r}")
    metrics.writes.labels("delete").inc()
    return DeleteResponse(deleted=doc_id)


@info_router.get("/healthz", response_model=Health)
async def healthz(svc: Service):
    """Liveness and readiness: the index and models are loaded."""
    return Health(status="ok", documents=await run_in_threadpool(svc.store.count))


@info_router.get("/stats", dependencies=[Depends(require_read_key)], responses=ERROR_RESPONSES)
async def stats(svc: Service, monitor: Monitor) -> dict:
    """Counts, models, index type and dimensions; ``monitor``: the live alignment figures.

    Models from local folders show as ``<folder name>#<digest>``, never as a file path."""
    out = await run_in_threadpool(svc.stats)
    for model in ("student", "teacher"):  # a relative folder is a path too
        if isinstance(out.get(model), str):
            out[model] = public_model_name(out[model])
    out["monitor"] = await run_in_threadpool(monitor.stats) if monitor is not None else {"enabled": False}
    return redact_all(out)


@info_router.get("/metrics", include_in_schema=False, dependencies=[Depends(require_metrics_key)])
async def metrics_endpoint(svc: Service, metrics: MetricsDep, monitor: Monitor):
    """Prometheus metrics."""
    metrics.documents.set(svc.store.count())
    if monitor is not None and metrics.monitor is not None:
        metrics.monitor.update(monitor.stats())
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
