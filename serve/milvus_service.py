"""The search service over a Milvus collection: the same calls as the FAISS one, Milvus holding the state.

Documents are embedded by the index's teacher (through its cache), queries by the student, as in
:mod:`serve.service`; the vectors, texts and metadata live in the collection that the index directory's
``meta.json`` names (:mod:`serve.store_config`), and the directory keeps only that, the writer lock and
the query log. A write is acknowledged once Milvus accepted it (see :mod:`serve.milvus_store` for what
that survives); there is no snapshot or write-ahead log of ours to replay.

Start-up refuses, with one error each: a recorded Milvus Lite file or collection that no longer
exists (never a silently empty index), a collection holding another teacher's vectors, a server that
does not answer, ``--read-only`` over a Milvus Lite file (one process owns it: replicas need a server),
and ``--mmap`` (there is no snapshot to map).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError
from serve.durability import lock_writer
from serve.errors import ServiceStateError
from serve.milvus_build import collection_exists
from serve.milvus_connect import MilvusOptions, is_lite_uri
from serve.milvus_filter import quote
from serve.milvus_store import MilvusStore
from serve.service_base import BaseSearchService, check_store_kind, load_models
from serve.service_types import Hit, SearchResult, ServiceOptions, UnknownFieldError
from serve.snapshot import read_meta
from serve.store import Document
from serve.store_config import StoreConfig, StoreKind, read_store_config
from serve.vector_store import StoreUnavailableError, TeacherIdentity

logger = logging.getLogger(__name__)

FIELD_SAMPLE = 256  # documents whose metadata keys are known from the start (others are looked up)


class ServiceMilvusStore(MilvusStore):
    """:class:`MilvusStore` plus the metadata-field lookups the service's filter check needs."""

    def has_field(self, name: str) -> bool:
        """Whether some stored document's metadata has the key ``name`` (True where Milvus cannot tell)."""
        expression = f"exists metadata[{quote(name)}]"
        try:
            rows = self._call("query", self._client.query, filter=expression, limit=1, output_fields=["id"])
        except StoreUnavailableError:
            raise
        except EmbedkdError as exc:  # a server without `exists`: the filtered search itself finds nothing
            logger.warning("cannot look up metadata field %r in Milvus (%s); accepting it", name, exc)
            return True
        return bool(rows)

    def sample_fields(self, limit: int = FIELD_SAMPLE) -> set[str]:
        """The metadata keys of up to ``limit`` stored documents."""
        rows = self._call("query", self._client.query, filter="", limit=limit, output_fields=["metadata"])
        return {key for row in rows for key in (row.get("metadata") or {})}


class MilvusDocuments:
    """``service.store`` of a Milvus-backed service: the document calls the HTTP routes make."""

    def __init__(self, store: MilvusStore) -> None:
        self._store = store

    def get(self, doc_id: str) -> Document | None:
        found = self._store.get([doc_id]).get(doc_id)
        return None if found is None else Document(found.doc_id, found.text, found.title, found.metadata)

    def count(self) -> int:
        return self._store.count()


def open_collection(
    index_dir: Path, meta, config: StoreConfig, options: ServiceOptions
) -> ServiceMilvusStore:
    """Open the collection ``index_dir`` records (at ``options.uri`` when given), refusing a missing one.

    Raises:
        ConfigError: ``--read-only`` over a Milvus Lite file, ``--mmap``, a bad URI.
        ServiceStateError: the Lite file or the collection does not exist.
        StoreUnavailableError: the server does not answer.
        StoreMismatchError: the collection holds another teacher's vectors.
    """
    uri = options.uri or config.uri
    lite = is_lite_uri(uri)
    if options.mmap:
        raise ConfigError(f"--mmap maps a FAISS snapshot; {index_dir} keeps its vectors in Milvus ({uri})")
    if lite and options.read_only:
        raise ConfigError(
            f"--read-only: {uri} is a Milvus Lite file, which one process owns; read-only replicas "
            "need a Milvus server (build the index with --uri http://host:19530)"
        )
    milvus = MilvusOptions(collection=config.collection, metric=config.metric, read_only=options.read_only)
    where = "that --uri names" if options.uri else f"that {index_dir} records"
    rebuild = f"rebuild it: embedkd index --store milvus --uri {uri} --index-dir {index_dir} --overwrite ..."
    if lite and not Path(uri).expanduser().exists():
        raise ServiceStateError(f"the Milvus Lite file {uri} {where} does not exist; {rebuild}")
    if not collection_exists(uri, milvus):
        raise ServiceStateError(
            f"collection {config.collection!r} {where} does not exist at {uri}; {rebuild}"
        )
    return ServiceMilvusStore.open(
        uri, TeacherIdentity.from_meta(meta), milvus, search_params=config.search_params or None
    )


class MilvusSearchService(BaseSearchService):
    """Asymmetric search over a Milvus collection. Use :meth:`open` (or
    :func:`serve.service.open_search_service`); call :meth:`close` when done."""

    store_kind = StoreKind.MILVUS

    def __init__(
        self, index_dir: Path, meta, encoder, teacher, options: ServiceOptions, vectors: ServiceMilvusStore
    ):
        super().__init__(index_dir, meta, encoder, teacher, options)
        self.vectors = vectors
        self.store = MilvusDocuments(vectors)
        self._fields = vectors.sample_fields()
        self._writer_lock = None if self.read_only else lock_writer(index_dir)  # the query log's directory

    @classmethod
    def open(
        cls, index_dir: str | Path, student, teacher=None, options: ServiceOptions | None = None
    ) -> MilvusSearchService:
        """Open the Milvus index ``index_dir`` with ``student`` for queries and optional ``teacher`` for writes.

        The collection is reached before the models load, so a bad target fails fast (see
        :func:`open_collection` for what is refused).
        """
        options = options or ServiceOptions()
        index_dir = Path(index_dir)
        meta = read_meta(index_dir)
        check_store_kind(index_dir, cls.store_kind, options)
        vectors = open_collection(index_dir, meta, read_store_config(index_dir), options)
        try:
            encoder, teacher = load_models(meta, student, teacher, options)
            return cls(index_dir, meta, encoder, teacher, options, vectors)
        except BaseException:
            vectors.close()
            raise

    # ----------------------------------------------------------------- writes
    def upsert(self, docs: Sequence[Document]) -> int:
        """Embed ``docs`` with the teacher and store them (replacing same-id documents); returns how many.

        Returns once Milvus acknowledged the write.
        """
        self._check_upsert(docs)
        vectors = self.embed_documents([d.embed_text for d in docs])
        with self._write_lock:
            n = self.vectors.upsert(docs, vectors)
            self._fields.update(key for d in docs for key in d.metadata)
        return n

    def delete(self, doc_id: str) -> bool:
        """Delete ``doc_id``; False when it does not exist."""
        self._check_writable()
        with self._write_lock:
            return self.vectors.delete([doc_id]) > 0

    def snapshot(self) -> None:
        """Nothing to snapshot: Milvus persists every acknowledged write itself."""

    def sync(self) -> int:
        """Nothing to follow: a replica reads the collection, which sees every acknowledged write."""
        return 0

    # ------------------------------------------------------------------ reads
    def check_filter(self, filters: dict | None) -> None:
        """Refuse filter fields no stored document has (looked up in Milvus the first time)."""
        if not filters:
            return
        for name in set(filters) - self._fields:
            if self.vectors.has_field(name):
                self._fields.add(name)
        unknown = sorted(set(filters) - self._fields)
        if unknown:
            known = ", ".join(sorted(self._fields)) or "none"
            raise UnknownFieldError(
                f"unknown filter field(s) {', '.join(unknown)}: no stored document has them "
                f"(fields seen: {known})"
            )

    def search_detailed(
        self, vectors: np.ndarray, k: int, filters: dict | None = None, include_text: bool = False
    ) -> SearchResult:
        """Top-``k`` documents per query vector; Milvus filters while searching, so no row is partial."""
        self.check_filter(filters)
        rows = self.vectors.search(vectors, k, filters, include_text)
        hits = [[Hit(h.doc_id, h.score, h.title, h.text, h.metadata) for h in row] for row in rows]
        return SearchResult(hits, [False] * len(hits))

    def stats(self) -> dict:
        documents = self.vectors.count()
        return {
            "store": self.store_kind.value,
            "milvus": "lite" if self.vectors.lite else "server",
            "uri": _public_uri(self.vectors.uri),
            "collection": self.vectors.collection,
            "documents": documents,
            "vectors": documents,
            "index_type": self.vectors.index_type.value,
            "metric": self.vectors.options.metric,
            **self.model_stats(),
            "metadata_fields": sorted(self._fields),
        }

    def close(self) -> None:
        """Close the collection (Milvus Lite: flushes and stops its embedded server) and the writer lock."""
        try:
            self.vectors.close()
        finally:
            if self._writer_lock is not None:
                self._writer_lock.close()
                self._writer_lock = None


def _public_uri(uri: str) -> str:
    """``uri`` without credentials (``http://user:secret@host`` → ``http://host``)."""
    if is_lite_uri(uri):
        return uri
    parts = urlsplit(uri)
    host = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=host))
