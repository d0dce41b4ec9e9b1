"""Reaching Milvus: the options, a Milvus Lite file or a server URL, and pymilvus errors as embedkd's.

Milvus Lite runs embedded in this process, one server per file (started by pymilvus on the first
client for it); a server is reached over gRPC within ``connect_timeout``. Every pymilvus or gRPC failure
becomes one :class:`~embedkd.errors.EmbedkdError`: :class:`StoreUnavailableError` when Milvus did not
answer (retry later), a plain error naming the operation when it refused the request.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from embedkd.errors import ConfigError, EmbedkdError
from serve import milvus_index as mi
from serve.vector_store import StoreUnavailableError


@dataclass(frozen=True)
class MilvusOptions:
    """How to open a Milvus store.

    Attributes:
        collection: collection name (letters, digits, underscores).
        index_type: flat | hnsw | ivf_flat | ivf_sq8 | ivf_pq (server only). None: the collection's
            current index, FLAT for a new collection. A different type on an existing collection
            rebuilds its index (writers only).
        metric: IP (default) or COSINE.
        index_params / search_params: override :func:`serve.milvus_index.build_params` / ``search_params``.
        read_only: a replica: never writes; needs a Milvus server and an existing collection.
        token / db_name: server credentials (``user:password`` or an API key) and database.
        connect_timeout: seconds to reach the server before :class:`StoreUnavailableError`.
        request_timeout: seconds per request, retries included.
        max_request_bytes: upserts are sent in requests of about this many bytes.
    """

    collection: str = "embedkd"
    index_type: mi.MilvusIndexType | str | None = None
    metric: str = "IP"
    index_params: dict | None = None
    search_params: dict | None = None
    read_only: bool = False
    token: str = field(default="", repr=False)
    db_name: str = ""
    connect_timeout: float = 5.0
    request_timeout: float = 30.0
    max_request_bytes: int = 16 << 20

    def __post_init__(self) -> None:
        name = self.collection
        if not name or len(name) > 255 or not (name[0].isalpha() or name[0] == "_"):
            raise ConfigError(f"collection name {name!r} must start with a letter or '_' (at most 255)")
        if not all(c.isascii() and (c.isalnum() or c == "_") for c in name):
            raise ConfigError(f"collection name {name!r} may hold only letters, digits and '_'")
        if self.index_type is not None:
            object.__setattr__(self, "index_type", mi.MilvusIndexType.parse(self.index_type))
        object.__setattr__(self, "metric", mi.check_metric(self.metric))
        for name in ("connect_timeout", "request_timeout", "max_request_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be > 0, got {getattr(self, name)}")


def is_lite_uri(uri: str) -> bool:
    """True for a Milvus Lite file (a path ending in ``.db``), False for a server URL.

    Raises:
        ConfigError: neither (no ``.db`` suffix and no http/https/tcp scheme).
    """
    if uri.startswith(("http://", "https://", "tcp://")):
        return False
    if uri.endswith(".db") and "://" not in uri:
        return True
    raise ConfigError(
        f"Milvus URI {uri!r} is neither a Milvus Lite file (a path ending in .db) nor a server "
        "(http://host:19530 or https://...)"
    )


class _LiteFiles:
    """How many open stores use each Milvus Lite file in this process.

    pymilvus runs one embedded server per file for the whole process and keeps it until exit; the last
    store to close a file stops it, which fsyncs its log and releases the file for other processes.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._users: dict[str, int] = {}

    def acquire(self, path: str) -> None:
        with self._lock:
            self._users[path] = self._users.get(path, 0) + 1

    def release(self, path: str) -> None:
        with self._lock:
            self._users[path] -= 1
            last = self._users[path] == 0
            if last:
                del self._users[path]
        if last:
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(path)


LITE_FILES = _LiteFiles()


def with_overrides(options: MilvusOptions, overrides: dict) -> MilvusOptions:
    unknown = sorted(set(overrides) - {f.name for f in fields(MilvusOptions)})
    if unknown:
        raise ConfigError(f"unknown Milvus option(s) {', '.join(unknown)}")
    return replace(options, **overrides) if overrides else options


def connect(uri: str, options: MilvusOptions, lite: bool):
    try:
        from pymilvus import MilvusClient
    except ImportError:
        raise EmbedkdError("the Milvus store needs pymilvus: pip install pymilvus milvus-lite") from None
    if lite:
        if not Path(uri).parent.is_dir():
            raise ConfigError(
                f"cannot create Milvus Lite file {uri}: folder {Path(uri).parent} does not exist"
            )
        LITE_FILES.acquire(uri)
    try:
        return MilvusClient(
            uri=uri, token=options.token, db_name=options.db_name, timeout=options.connect_timeout
        )
    except Exception as exc:
        if lite:
            LITE_FILES.release(uri)
            raise EmbedkdError(
                f"cannot open Milvus Lite file {uri} ({_message(exc)}): it may be open in another process "
                "(Milvus Lite allows one process per file; use a Milvus server to share it)"
            ) from exc
        raise translate(exc, "connect", uri, options) from exc


def translate(exc: Exception, what: str, uri: str, options: MilvusOptions) -> EmbedkdError:
    """A pymilvus / gRPC failure as one clear error: unavailable (retry later) or refused (bad request)."""
    import grpc
    from pymilvus.client.types import Status
    from pymilvus.exceptions import ConnectError, MilvusException, MilvusUnavailableException

    if isinstance(exc, EmbedkdError):
        return exc
    code = getattr(exc, "code", None)
    unavailable = (
        isinstance(exc, (grpc.RpcError, ConnectError, MilvusUnavailableException))
        or isinstance(code, grpc.StatusCode)  # pymilvus gave up retrying a gRPC failure
        or code == Status.CONNECT_FAILED  # the channel to the server is down
        or (what == "connect" and isinstance(exc, MilvusException))
    )
    if unavailable:
        timeout = options.connect_timeout if what == "connect" else options.request_timeout
        return StoreUnavailableError(
            f"Milvus at {uri} did not answer ({what}, timeout {timeout:g} s): {_message(exc)}; "
            "check that the server runs and the URI is right"
        )
    return EmbedkdError(f"Milvus refused {what}: {_message(exc)}")


def milvus_errors() -> tuple[type[BaseException], ...]:
    """The exceptions a pymilvus call raises when Milvus fails (anything else is a bug to surface)."""
    import grpc
    from pymilvus.exceptions import MilvusException

    return (MilvusException, grpc.RpcError)


def _message(exc: BaseException) -> str:
    details = getattr(exc, "details", None)
    text = getattr(exc, "message", "") or (details() if callable(details) else "") or str(exc)
    return str(text).strip()
