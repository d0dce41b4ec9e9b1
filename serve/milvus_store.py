"""Documents and their teacher vectors in Milvus: one collection, searched with metadata filters.

``uri`` picks the target, with the same client code for both (pymilvus ``MilvusClient``):

- a local file path ending in ``.db`` (``./docs.db``, ``/data/docs.db``): **Milvus Lite**, embedded in
  this process. One process per file; no replicas.
- ``http(s)://host:19530``: a **Milvus server** (standalone or cluster); replicas open it read-only.

The collection holds ``id`` (string primary key), ``vector`` (float32, L2-normalised when the teacher
identity says so, so inner product is cosine), ``title``, ``text`` and ``metadata`` (JSON). The teacher
identity is stored in the collection's properties and checked on every open.

Durability of an acknowledged write (:meth:`MilvusStore.upsert` and :meth:`MilvusStore.delete` return
only after Milvus answered):

- Milvus Lite appends every write to its write-ahead log and hands it to the operating system before
  answering, so it survives the process being killed. It does not fsync per write: the log is fsynced
  only when a flush (:meth:`MilvusStore.flush`, :meth:`MilvusStore.close`, or a full memtable) turns it
  into Parquet segments, and those segments are written without fsync (only the manifest pointing at
  them is). A power loss or kernel crash can therefore lose writes from roughly the OS write-back
  interval (about 30 s on Linux defaults) before it. pymilvus offers no setting for this.
- A Milvus server answers after the write reached its log broker / write-ahead log (Woodpecker,
  Pulsar or Kafka), whose own replication and fsync settings decide what survives a machine crash.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError
from serve import milvus_index as mi
from serve.milvus_connect import (
    LITE_FILES,
    MilvusOptions,
    connect,
    is_lite_uri,
    milvus_errors,
    translate,
    with_overrides,
)
from serve.milvus_filter import filter_expression, matches_nothing
from serve.vector_store import (
    Filters,
    StoredDocument,
    StoreHit,
    StoreMismatchError,
    StoreReadOnlyError,
    TeacherIdentity,
)

if TYPE_CHECKING:
    from serve.index import IndexMeta
    from serve.store import Document

logger = logging.getLogger(__name__)

PROPERTY = "embedkd.teacher"  # collection property holding the TeacherIdentity as JSON
ID_BYTES, TEXT_BYTES, JSON_BYTES = 512, 65_535, 65_536  # Milvus VARCHAR / JSON limits (bytes)


class MilvusStore:
    """A :class:`~serve.vector_store.VectorStore` over one Milvus collection. Use :meth:`open`."""

    def __init__(self, client, uri: str, identity: TeacherIdentity, options: MilvusOptions, lite: bool):
        self._client, self.uri, self.identity, self.options, self.lite = client, uri, identity, options, lite
        self.collection = options.collection
        self.read_only = options.read_only
        self.index_type = mi.MilvusIndexType.FLAT

    @classmethod
    def open(
        cls,
        uri: str,
        teacher: TeacherIdentity | IndexMeta,
        options: MilvusOptions | None = None,
        **overrides,
    ) -> MilvusStore:
        """Open (a writer creates) the collection for ``teacher``'s vectors at ``uri``.

        ``overrides`` are :class:`MilvusOptions` fields: ``MilvusStore.open("docs.db", meta,
        collection="docs", index_type="hnsw")``.

        Raises:
            ConfigError: a bad option, an index type the target lacks, read_only on Milvus Lite.
            StoreUnavailableError: the server does not answer within ``connect_timeout``.
            StoreMismatchError: the collection holds another teacher's vectors, or is not embedkd's.
        """
        options = with_overrides(options or MilvusOptions(), overrides)
        identity = teacher if isinstance(teacher, TeacherIdentity) else TeacherIdentity.from_meta(teacher)
        lite = is_lite_uri(uri)
        if lite and options.read_only:
            raise ConfigError(
                f"{uri} is a Milvus Lite file, which one process owns: use a Milvus server "
                "(http://host:19530) for replicas"
            )
        if options.index_type is not None:
            mi.check_supported(mi.MilvusIndexType.parse(options.index_type), lite)
        if lite:
            uri = str(Path(uri).expanduser().resolve())
        client = connect(uri, options, lite)
        store = cls(client, uri, identity, options, lite)
        try:
            store._attach()
        except BaseException:
            store.close()
            raise
        return store

    # ------------------------------------------------------------- collection
    def _attach(self) -> None:
        if not self._call("has_collection", self._client.has_collection):
            if self.read_only:
                raise StoreMismatchError(
                    f"collection {self.collection!r} does not exist at {self.uri}; a read-only replica "
                    "opens a collection a writer created"
                )
            self._create()
        else:
            self._check_identity()
            self._ensure_index()
        self._call("load_collection", self._client.load_collection)
        target = "Lite" if self.lite else "server"
        logger.info(
            "Milvus %s %s: collection %r, %s index", target, self.uri, self.collection, self.index_type.value
        )

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=ID_BYTES)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.identity.dim)
        schema.add_field("title", DataType.VARCHAR, max_length=TEXT_BYTES, nullable=True)
        schema.add_field("text", DataType.VARCHAR, max_length=TEXT_BYTES)
        schema.add_field("metadata", DataType.JSON)
        self.index_type = mi.MilvusIndexType.parse(self.options.index_type or "flat")
        self._call(
            "create_collection",
            self._client.create_collection,
            schema=schema,
            index_params=self._index_params(),
            consistency_level="Strong",  # a search sees every acknowledged write
            properties={PROPERTY: json.dumps(self.identity.to_dict(), sort_keys=True)},
        )

    def _check_identity(self) -> None:
        desc = self._call("describe_collection", self._client.describe_collection)
        raw = (desc.get("properties") or {}).get(PROPERTY)
        if not raw:
            raise StoreMismatchError(
                f"collection {self.collection!r} at {self.uri} was not created by embedkd (it has no "
                f"{PROPERTY!r} property); choose another collection name"
            )
        stored = TeacherIdentity.from_dict(json.loads(raw))
        if stored.differences(self.identity):
            differs = ", ".join(stored.differences(self.identity))
            raise StoreMismatchError(
                f"collection {self.collection!r} at {self.uri} holds vectors of teacher {stored.describe()}, "
                f"not of {self.identity.describe()} (differs in {differs}); "
                "open it with its own teacher or choose another collection"
            )

    def _index_params(self):
        from pymilvus import MilvusClient

        params = MilvusClient.prepare_index_params()
        params.add_index(
            field_name="vector",
            index_name="vector",
            index_type=self.index_type.milvus_name,
            metric_type=self.options.metric,
            params=mi.build_params(self.index_type, self.identity.dim, self.options.index_params),
        )
        return params

    def _ensure_index(self) -> None:
        names = self._call("list_indexes", self._client.list_indexes, field_name="vector")
        if not names:
            self.build_index(self.options.index_type or mi.MilvusIndexType.FLAT)
            return
        info = self._call("describe_index", self._client.describe_index, index_name=names[0]) or {}
        current = mi.MilvusIndexType.parse(info.get("index_type", "FLAT"))
        if info.get("metric_type", self.options.metric).upper() != self.options.metric:
            raise ConfigError(
                f"collection {self.collection!r} is indexed with metric {info.get('metric_type')}, "
                f"not {self.options.metric}; open it with metric={info.get('metric_type')!r}"
            )
        self.index_type = current
        wanted = (
            None if self.options.index_type is None else mi.MilvusIndexType.parse(self.options.index_type)
        )
        if wanted is not None and wanted is not current:
            if self.read_only:
                raise ConfigError(
                    f"collection {self.collection!r} has a {current.value} index, not {wanted.value}; "
                    "a read-only replica cannot rebuild it"
                )
            self.build_index(wanted)

    def build_index(self, index_type: mi.MilvusIndexType | str | None = None) -> None:
        """(Re)build the vector index as ``index_type`` (default: the current one), then load it."""
        self._check_writable()
        kind = mi.MilvusIndexType.parse(index_type or self.index_type)
        mi.check_supported(kind, self.lite)
        self._call("release_collection", self._client.release_collection)
        for name in self._call("list_indexes", self._client.list_indexes, field_name="vector"):
            self._call("drop_index", self._client.drop_index, index_name=name)
        self.index_type = kind
        self._call("create_index", self._client.create_index, index_params=self._index_params())
        self._call("load_collection", self._client.load_collection)
        logger.info("built a %s index on collection %r", kind.milvus_name, self.collection)

    # ----------------------------------------------------------------- writes
    def upsert(self, docs: Sequence[Document], vectors: np.ndarray) -> int:
        """Store ``docs`` with their teacher ``vectors``, replacing same-id documents; returns how many.

        Returns once Milvus acknowledged every request (see the module docstring for what that
        guarantees). Requests hold about ``max_request_bytes`` each; a batch larger than that is not
        atomic: a failure part-way leaves the earlier requests applied.
        """
        self._check_writable()
        vecs = self._prepare(vectors)
        if len(vecs) != len(docs):
            raise EmbedkdError(f"{len(docs)} documents but {len(vecs)} vectors")
        ids = [d.id for d in docs]
        if len(set(ids)) != len(ids):
            raise EmbedkdError("duplicate document ids in one upsert")
        batch: list[dict] = []
        size = 0
        for doc, vec in zip(docs, vecs):
            row, row_bytes = _row(doc, vec)
            if batch and size + row_bytes > self.options.max_request_bytes:
                self._call("upsert", self._client.upsert, data=batch)
                batch, size = [], 0
            batch.append(row)
            size += row_bytes
        if batch:
            self._call("upsert", self._client.upsert, data=batch)
        return len(docs)

    def delete(self, ids: Sequence[str]) -> int:
        """Delete the documents ``ids``; returns how many existed."""
        self._check_writable()
        present = list(self.get(ids))
        if present:
            self._call("delete", self._client.delete, ids=present)
        return len(present)

    def flush(self) -> None:
        """Seal what Milvus holds in memory into segments (Lite: not an fsync; see the module docstring)."""
        self._call("flush", self._client.flush)

    def _check_writable(self) -> None:
        if self.read_only:
            raise StoreReadOnlyError(
                f"the Milvus store {self.uri} ({self.collection}) is a read-only replica"
            )

    # ------------------------------------------------------------------ reads
    def search(
        self, query_vectors: np.ndarray, k: int, filters: Filters | None = None, include_text: bool = True
    ) -> list[list[StoreHit]]:
        """Top-``k`` documents per query vector, best first, optionally filtered on metadata equality."""
        q = self._prepare(query_vectors)
        if k < 1 or not len(q) or matches_nothing(filters):
            return [[] for _ in range(len(q))]
        params = mi.search_params(self.index_type, k, self.options.search_params)
        rows = self._call(
            "search",
            self._client.search,
            data=q.tolist(),
            anns_field="vector",
            filter=filter_expression(filters),
            limit=k,
            output_fields=["metadata", "title", "text"] if include_text else ["metadata"],
            search_params={"metric_type": self.options.metric, "params": params},
        )
        return [[_hit(h) for h in row] for row in rows]

    def get(self, ids: Sequence[str], with_vectors: bool = False) -> dict[str, StoredDocument]:
        """The stored documents among ``ids`` (missing ones are absent), by id."""
        ids = [str(i) for i in ids]
        if not ids:
            return {}
        out_fields = ["title", "text", "metadata"] + (["vector"] if with_vectors else [])
        rows = self._call("get", self._client.get, ids=ids, output_fields=out_fields)
        return {
            r["id"]: StoredDocument(
                r["id"],
                r.get("title"),
                r.get("text", ""),
                r.get("metadata") or {},
                np.asarray(r["vector"], dtype=np.float32) if with_vectors else None,
            )
            for r in rows
        }

    def count(self) -> int:
        """How many documents the collection holds (exact: deleted ones excluded)."""
        rows = self._call("count", self._client.query, filter="", output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def stats(self) -> dict:
        return {
            "store": "milvus-lite" if self.lite else "milvus",
            "uri": self.uri,
            "collection": self.collection,
            "index_type": self.index_type.value,
            "metric": self.options.metric,
            "documents": self.count(),
            "teacher": self.identity.teacher_id,
            "dim": self.identity.dim,
            "read_only": self.read_only,
        }

    def close(self) -> None:
        """Close the connection; the last store on a Milvus Lite file stops its embedded server."""
        client, self._client = self._client, None
        if client is None:
            return
        client.close()
        if self.lite:
            LITE_FILES.release(self.uri)

    def __enter__(self) -> MilvusStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -------------------------------------------------------------- internals
    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        dim = self.identity.dim
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.size % dim or (vecs.ndim == 2 and vecs.shape[1] != dim):
            raise EmbedkdError(f"vectors of shape {vecs.shape} do not have the store's dimension {dim}")
        vecs = vecs.reshape(-1, dim)
        if not np.isfinite(vecs).all():
            raise EmbedkdError("vectors contain NaN or inf")
        if self.identity.normalize:
            norms = np.linalg.norm(vecs, axis=1, keepdims=True)
            vecs = vecs / np.where(norms > 0, norms, 1.0)
        return vecs

    def _call(self, op: str, fn: Callable, **kwargs):
        if self._client is None:
            raise EmbedkdError(f"the Milvus store {self.uri} is closed")
        try:
            return fn(collection_name=self.collection, timeout=self.options.request_timeout, **kwargs)
        except milvus_errors() as exc:
            raise translate(exc, f"{op} on collection {self.collection!r}", self.uri, self.options) from exc


def _row(doc: Document, vector: np.ndarray) -> tuple[dict, int]:
    """One entity for Milvus and its approximate size in bytes; refuses what Milvus would reject."""
    doc_id = doc.id
    if not isinstance(doc_id, str) or not doc_id or len(doc_id.encode()) > ID_BYTES:
        raise EmbedkdError(f"document id {doc_id!r} must be a non-empty string of at most {ID_BYTES} bytes")
    sizes = {"text": len(doc.text.encode()), "title": len((doc.title or "").encode())}
    try:
        sizes["metadata"] = len(json.dumps(doc.metadata or {}, ensure_ascii=False).encode())
    except (TypeError, ValueError) as exc:
        raise EmbedkdError(f"document {doc_id!r}: metadata is not JSON ({exc})") from None
    for name, limit in (("text", TEXT_BYTES), ("title", TEXT_BYTES), ("metadata", JSON_BYTES)):
        if sizes[name] > limit:
            raise EmbedkdError(
                f"document {doc_id!r}: {name} is {sizes[name]} bytes, over Milvus's limit of {limit}"
            )
    row = {
        "id": doc_id,
        "vector": vector.tolist(),
        "title": doc.title,
        "text": doc.text,
        "metadata": dict(doc.metadata or {}),
    }
    return row, sum(sizes.values()) + 4 * len(vector) + len(doc_id) + 64


def _hit(h: dict) -> StoreHit:
    entity = h.get("entity") or {}
    return StoreHit(
        str(h["id"]),
        float(h["distance"]),
        entity.get("title"),
        entity.get("text"),
        entity.get("metadata") or {},
    )


__all__ = ["MilvusOptions", "MilvusStore", "is_lite_uri"]
