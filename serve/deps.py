"""Request dependencies: the service objects from the app state, and API-key checks."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from serve.batcher import MicroBatcher
from serve.metrics import Metrics
from serve.monitor import AlignmentMonitor
from serve.service import SearchService
from serve.settings import ServeSettings

bearer = HTTPBearer(auto_error=False, description="the service's API key (EMBEDKD_API_KEY / --api-key-file)")

# Every dependency here is ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in its
# thread pool, a thread hand-off each per request (six on /search: about 1 ms at concurrency 1).


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


async def get_service(request: Request) -> SearchService:
    return request.app.state.service


async def get_batcher(request: Request) -> MicroBatcher:
    return request.app.state.batcher


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_monitor(request: Request) -> AlignmentMonitor | None:
    return getattr(request.app.state, "monitor", None)


@dataclass(frozen=True)
class SearchState:
    """Everything ``/search`` takes from the app state, as one dependency: FastAPI resolves each
    dependency separately on every request, and the search route is the one whose latency is judged."""

    service: SearchService
    batcher: MicroBatcher
    settings: ServeSettings
    metrics: Metrics
    monitor: AlignmentMonitor | None


async def get_search_state(request: Request) -> SearchState:
    state = request.app.state
    return SearchState(
        state.service, state.batcher, state.settings, state.metrics, getattr(state, "monitor", None)
    )


def check_key(settings: ServeSettings, creds: HTTPAuthorizationCredentials | None) -> None:
    """Raise 401 unless ``creds`` hold the service's key (403 when no key is configured)."""
    if settings.api_key is None:
        raise HTTPException(
            403, "writes are disabled: no API key is configured (set EMBEDKD_API_KEY or --api-key-file)"
        )
    expected = settings.api_key.get_secret_value().encode()
    given = creds.credentials.encode() if creds is not None else b""
    if creds is None or not hmac.compare_digest(given, expected):
        raise HTTPException(401, "missing or wrong API key", headers={"WWW-Authenticate": "Bearer"})


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


async def require_write_key(request: Request, creds: Credentials) -> None:
    """Writes always need the key (``Authorization: Bearer <key>``)."""
    check_key(request.app.state.settings, creds)


async def require_read_key(request: Request, creds: Credentials) -> None:
    """Reads (searches, stats, the OpenAPI docs) need the key only when ``protect_reads`` is set."""
    if request.app.state.settings.protect_reads:
        check_key(request.app.state.settings, creds)


async def require_metrics_key(request: Request, creds: Credentials) -> None:
    """``/metrics`` needs the key only when ``protect_metrics`` is set."""
    if request.app.state.settings.protect_metrics:
        check_key(request.app.state.settings, creds)


Service = Annotated[SearchService, Depends(get_service)]
Batcher = Annotated[MicroBatcher, Depends(get_batcher)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
Settings = Annotated[ServeSettings, Depends(get_settings)]
Monitor = Annotated[AlignmentMonitor | None, Depends(get_monitor)]
SearchDeps = Annotated[SearchState, Depends(get_search_state)]
