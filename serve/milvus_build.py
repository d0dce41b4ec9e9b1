"""Building a Milvus-backed index: the target checked before any teacher work, then the collection filled.

The collection is filled under a temporary name (``<collection>__embedkd_build``) and renamed into place
only when every document is in, so an interrupted build never leaves a half-filled collection under
the name a service opens; a rerun drops what an interrupted one left. An existing collection is
replaced only with ``overwrite`` and only when it holds the same teacher's vectors.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedkd.errors import ConfigError, EmbedkdError
from serve import milvus_index as mi
from serve.milvus_connect import LITE_FILES, MilvusOptions, connect, is_lite_uri, milvus_errors, translate
from serve.milvus_store import MilvusStore
from serve.store_config import StoreConfig, StoreKind
from serve.vector_store import TeacherIdentity

if TYPE_CHECKING:
    from serve.index import IndexMeta
    from serve.store import Document

logger = logging.getLogger(__name__)

BUILD_SUFFIX = "__embedkd_build"


class _LiteUnimplemented(logging.Filter):
    """Drops Milvus Lite's "Method not implemented!" error: pymilvus asks for a timestamp (which Lite
    lacks) while waiting for a new index, and carries on without it; Lite's gRPC server still logs
    the refusal as an error with a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Method not implemented" not in record.getMessage()


@contextmanager
def _quiet_lite_server() -> Iterator[None]:
    grpc_log, quiet = logging.getLogger("grpc._server"), _LiteUnimplemented()
    grpc_log.addFilter(quiet)
    try:
        yield
    finally:
        grpc_log.removeFilter(quiet)


@dataclass(frozen=True)
class MilvusSpec:
    """Where and how to build a Milvus-backed index (``embedkd index --store milvus``).

    Attributes:
        uri: a Milvus Lite file (``./runs/scifact.db``; recorded as an absolute path) or a server
            (``http://host:19530``).
        collection: collection name (letters, digits, '_').
        index_type: flat | hnsw | ivf_flat | ivf_sq8 | ivf_pq (a Milvus server only).
        metric: IP (cosine on the normalised vectors) or COSINE.
        index_params: build parameters over :func:`serve.milvus_index.build_params` (``M``,
            ``efConstruction``, ``nlist``, ``m``, ``nbits``).
        search_params: per-search parameters the service uses (``ef``, ``nprobe``), recorded in meta.json.
        batch_size: documents per upsert request while building.
    """

    uri: str
    collection: str = "embedkd"
    index_type: mi.MilvusIndexType | str = mi.MilvusIndexType.FLAT
    metric: str = "IP"
    index_params: dict = field(default_factory=dict)
    search_params: dict = field(default_factory=dict)
    batch_size: int = 1024

    def __post_init__(self) -> None:
        kind = mi.MilvusIndexType.parse(self.index_type)
        object.__setattr__(self, "index_type", kind)
        lite = is_lite_uri(self.uri)
        mi.check_supported(kind, lite)
        if lite:
            object.__setattr__(self, "uri", str(Path(self.uri).expanduser().resolve()))
        object.__setattr__(self, "metric", self.options().metric)  # validates the name and the metric
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")

    @property
    def lite(self) -> bool:
        return is_lite_uri(self.uri)

    def options(self, **overrides) -> MilvusOptions:
        """The :class:`MilvusOptions` to open the collection with (``overrides`` replace fields)."""
        base = MilvusOptions(
            collection=self.collection,
            index_type=self.index_type,
            metric=self.metric,
            index_params=self.index_params or None,
            search_params=self.search_params or None,
        )
        return replace(base, **overrides)

    def store_config(self) -> StoreConfig:
        return StoreConfig(StoreKind.MILVUS, self.uri, self.collection, self.metric, dict(self.search_params))


@contextmanager
def milvus_client(uri: str, options: MilvusOptions) -> Iterator:
    """A plain pymilvus client for collection housekeeping (exists, drop, rename)."""
    lite = is_lite_uri(uri)
    if lite:
        uri = str(Path(uri).expanduser().resolve())
    client = connect(uri, options, lite)
    try:
        yield client
    finally:
        client.close()
        if lite:
            LITE_FILES.release(uri)


def _admin(uri: str, options: MilvusOptions, op: str, **kwargs):
    """Run ``MilvusClient.<op>(**kwargs)`` once; pymilvus failures become embedkd errors."""
    with milvus_client(uri, options) as client:
        try:
            return getattr(client, op)(timeout=options.request_timeout, **kwargs)
        except milvus_errors() as exc:
            raise translate(exc, op, uri, options) from exc


def collection_exists(uri: str, options: MilvusOptions) -> bool:
    """Whether ``options.collection`` exists at ``uri`` (a Lite file that does not exist has none).

    Raises:
        StoreUnavailableError: the server does not answer within ``options.connect_timeout``.
    """
    if is_lite_uri(uri) and not Path(uri).expanduser().exists():
        return False
    return bool(_admin(uri, options, "has_collection", collection_name=options.collection))


def check_reachable(spec: MilvusSpec) -> bool:
    """Reach the target before anything is loaded; whether the collection exists.

    Raises:
        ConfigError: a Lite file in a folder that does not exist.
        StoreUnavailableError: the server does not answer.
    """
    if spec.lite and not Path(spec.uri).parent.is_dir():
        raise ConfigError(f"cannot create Milvus Lite file {spec.uri}: its folder does not exist")
    return collection_exists(spec.uri, spec.options(index_type=None))


def check_target(spec: MilvusSpec, identity: TeacherIdentity, *, overwrite: bool) -> None:
    """Fail before any teacher work when the build could not finish.

    Raises:
        ConfigError: a Lite file in a folder that does not exist.
        StoreUnavailableError: the server does not answer.
        StoreMismatchError: the collection holds another teacher's vectors (or is not embedkd's).
        EmbedkdError: the collection exists and ``overwrite`` is not set.
    """
    options = spec.options(index_type=None)
    if not check_reachable(spec):
        return
    with MilvusStore.open(spec.uri, identity, options) as store:  # checks the teacher identity
        count = store.count()
    if not overwrite:
        raise EmbedkdError(
            f"collection {spec.collection!r} at {spec.uri} already holds {count} documents; pass "
            "--overwrite to replace it, or choose another --collection"
        )


def fill_collection(
    spec: MilvusSpec,
    docs: Sequence[Document],
    vectors: np.ndarray,
    identity: TeacherIdentity,
    *,
    overwrite: bool = False,
    show_progress: bool = True,
) -> dict:
    """Store ``docs`` and their teacher ``vectors`` as collection ``spec.collection``; returns the
    index build parameters used.

    Raises:
        See :func:`check_target`; StoreUnavailableError when Milvus stops answering part-way (the
        temporary collection is then dropped where possible).
    """
    check_target(spec, identity, overwrite=overwrite)
    building = spec.options(collection=spec.collection + BUILD_SUFFIX)
    if collection_exists(spec.uri, building):
        logger.warning("dropping %r, left by an interrupted build", building.collection)
        _admin(spec.uri, building, "drop_collection", collection_name=building.collection)
    try:
        with _quiet_lite_server(), MilvusStore.open(spec.uri, identity, building) as store:
            _upsert_all(store, docs, vectors, spec.batch_size, show_progress)
            store.flush()  # seals the segments: the index is built before the service opens it
        final = spec.options(index_type=None)
        if collection_exists(spec.uri, final):
            _admin(spec.uri, final, "drop_collection", collection_name=spec.collection)
        _admin(spec.uri, final, "rename_collection", old_name=building.collection, new_name=spec.collection)
    except BaseException:
        try:
            if collection_exists(spec.uri, building):
                _admin(spec.uri, building, "drop_collection", collection_name=building.collection)
        except EmbedkdError as exc:  # the build's own error matters more
            logger.warning("could not drop %r: %s", building.collection, exc)
        raise
    logger.info(
        "Milvus collection %r at %s: %d documents, %s index",
        spec.collection,
        spec.uri,
        len(docs),
        spec.index_type.value,
    )
    return mi.build_params(spec.index_type, identity.dim, spec.index_params)


def _upsert_all(
    store: MilvusStore, docs: Sequence[Document], vectors: np.ndarray, batch: int, show_progress: bool
) -> None:
    from tqdm.auto import tqdm

    if len(docs) != len(vectors):
        raise EmbedkdError(f"{len(docs)} documents but {len(vectors)} vectors")
    quiet = not show_progress or not logger.isEnabledFor(logging.INFO)
    with tqdm(total=len(docs), desc="milvus upsert", unit="doc", disable=quiet) as bar:
        for start in range(0, len(docs), batch):
            store.upsert(docs[start : start + batch], vectors[start : start + batch])
            bar.update(min(batch, len(docs) - start))


def milvus_meta(meta: IndexMeta, spec: MilvusSpec, params: dict) -> IndexMeta:
    """``meta`` describing the Milvus index: its type and build parameters, one shard."""
    return replace(meta, index_type=spec.index_type.value, shards=1, params=params)
