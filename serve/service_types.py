"""The search service's options, results and request errors (no engine here: see :mod:`serve.service`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from embedkd.errors import EmbedkdError


class ReadOnlyError(EmbedkdError):
    """A write reached a service that cannot write (no teacher configured, or a read-only replica)."""


class UnknownFieldError(EmbedkdError):
    """A filter names a metadata field no document has."""


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: str
    score: float
    title: str | None = None
    text: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class SearchResult:
    """Hits per query row, and per row whether the search stopped at ``max_candidates`` short of ``k``."""

    hits: list[list[Hit]]
    partial: list[bool]


@dataclass(frozen=True)
class ServiceOptions:
    """Engine knobs (the HTTP settings map onto these).

    Attributes:
        read_only: never write to the index directory.
        mmap: memory-map the snapshot instead of reading it (implies read_only).
        snapshot_every: snapshot after this many acknowledged writes (0: only at shutdown).
        overfetch: hits fetched per wanted hit when filtering or when stale ids may exist.
        cache_dir: teacher cache root.
        teacher_batch_size: teacher batch size for document embedding.
        device: torch device for the models.
        quantize: ``int8`` runs the query encoder's ONNX int8 graph (None: the backend's default).
        backend: query encoder runtime: ``torch``, ``onnx`` or ``openvino``.
        threads: CPU threads of the ONNX / OpenVINO runtime (None: all cores).
        max_candidates: most hits one query examines when a filter (or stale ids) rejects many; a row
            still short of ``k`` then comes back with what was found, flagged partial.
        verify: check the snapshot, the write-ahead log and the document store against each other
            at start-up (:mod:`serve.verify`); off only for tests of what it prevents.
        snapshot_retry_seconds: after a failed snapshot (a full disk), wait this long before the next try.
        store: ``faiss`` or ``milvus``: the store the index directory must record (None: whichever it
            records; see :func:`serve.service.open_search_service`).
        uri: a Milvus index's URI to use instead of the recorded one (a server reached under another
            name, a moved Milvus Lite file).
    """

    read_only: bool = False
    mmap: bool = False
    snapshot_every: int = 1000
    overfetch: int = 4
    cache_dir: str | None = None
    teacher_batch_size: int = 32
    device: str | None = None
    quantize: str | None = None
    backend: str = "torch"
    threads: int | None = None
    max_candidates: int = 10_000
    verify: bool = True
    snapshot_retry_seconds: float = 30.0
    store: str | None = None
    uri: str | None = None


def merge_hits(main: list, recent: list, k: int) -> list:
    """Top ``k`` of the snapshot index's and the recent-writes index's hits, one per id.

    A document written after the snapshot can be in both (its snapshot vector may be stale); the
    recent one wins, and a duplicate never takes a slot from another document.
    """
    seen = {vid for vid, _ in recent}
    return sorted(recent + [h for h in main if h[0] not in seen], key=lambda h: -h[1])[:k]
