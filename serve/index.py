"""The vector index: FAISS with stable int64 ids, knowing nothing of HTTP or documents.

Three index types share one interface (:class:`VectorIndex`):

- ``flat`` (default): exact inner product, ``IndexIDMap2(IndexFlatIP)``; add and remove by id.
- ``hnsw``: ``IndexIDMap2(IndexHNSWFlat)``; fast approximate search. HNSW cannot delete, so a removed
  id stays in the graph and the caller drops it (the document store no longer knows it); search
  over-fetches to make up for it.
- ``ivfpq``: ``IVF{nlist},PQ{m}x{nbits}`` (ids stored natively), trained on a sample, with
  parameters chosen from the corpus size unless given (:func:`ivfpq_params`).

Vectors are L2-normalised on the way in when the index records ``normalize`` (inner product is then
cosine). ``shards > 1`` splits the vectors over several sub-indexes searched together through
``faiss.IndexShards`` (an id always lives in shard ``id % shards``).
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum

import faiss
import numpy as np

from embedkd.errors import ConfigError, EmbedkdError
from serve import threads

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
#: ``accept(query_row, ids) -> bool mask``: which hits a search may return (filters, stale ids).
Accept = Callable[[int, np.ndarray], np.ndarray]


class IndexType(str, Enum):
    """Which FAISS structure holds the vectors."""

    FLAT = "flat"
    HNSW = "hnsw"
    IVFPQ = "ivfpq"


@dataclass(frozen=True)
class IndexMeta:
    """What made an index: recorded with it, checked against every model that touches it.

    Attributes:
        teacher_id: the teacher's :attr:`~embedkd.teachers.Teacher.id` (model + sequence length ...).
        teacher_name: the model string it was loaded from (to load it again for writes).
        dim: vector dimension.
        normalize: vectors (documents and queries) are L2-normalised before use (cosine scores).
        teacher_normalize: the teacher itself normalised its outputs.
        query_prompt / document_prompt: the teacher's prompts for each role.
        teacher_max_seq_length: the teacher's token limit when documents were embedded.
        index_type: ``flat`` | ``hnsw`` | ``ivfpq``.
        shards: number of FAISS sub-indexes.
        params: index parameters actually used (nlist, m, nbits, hnsw_m, ...).
    """

    teacher_id: str
    teacher_name: str
    dim: int
    normalize: bool = True
    teacher_normalize: bool = False
    query_prompt: str = ""
    document_prompt: str = ""
    teacher_max_seq_length: int | None = None
    index_type: str = IndexType.FLAT.value
    shards: int = 1
    params: dict = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IndexMeta:
        if data.get("format") != FORMAT_VERSION:
            raise EmbedkdError(
                f"index format {data.get('format')!r} is not supported (expected {FORMAT_VERSION})"
            )
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class IndexSpec:
    """How to build an index; ``None`` parameters are chosen from the corpus size.

    Attributes:
        index_type: flat | hnsw | ivfpq (a plain string is accepted).
        shards: number of sub-indexes (>= 1).
        hnsw_m: HNSW neighbours per node.
        hnsw_ef_search: HNSW search breadth.
        nlist: IVF cells.
        pq_m: PQ sub-quantizers (must divide the dimension).
        pq_nbits: bits per PQ code (1-8).
        nprobe: IVF cells visited per query.
        train_size: vectors sampled to train IVF-PQ.
        seed: sampling seed.
    """

    index_type: IndexType | str = IndexType.FLAT
    shards: int = 1
    hnsw_m: int | None = None
    hnsw_ef_search: int | None = None
    nlist: int | None = None
    pq_m: int | None = None
    pq_nbits: int | None = None
    nprobe: int | None = None
    train_size: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(
                self, "index_type", IndexType(str(getattr(self.index_type, "value", self.index_type)))
            )
        except ValueError:
            raise ConfigError(
                f"unknown index type {self.index_type!r}; expected one of {', '.join(t.value for t in IndexType)}"
            ) from None
        if self.shards < 1:
            raise ConfigError(f"shards must be >= 1, got {self.shards}")
        for name in ("hnsw_m", "hnsw_ef_search", "nlist", "pq_m", "nprobe", "train_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.pq_nbits is not None and not 1 <= self.pq_nbits <= 8:
            raise ConfigError(f"pq_nbits must be in 1..8, got {self.pq_nbits}")


def ivfpq_params(n: int, dim: int, spec: IndexSpec = IndexSpec()) -> dict:
    """IVF-PQ parameters for ``n`` vectors of ``dim``: the spec's where given, else from the size.

    nlist ≈ 4·√n (at least 39 training points per cell, as FAISS wants), PQ codes of ≤ 64 sub-vectors
    of ``dim/m`` dims, 8 bits per code once there are enough points to train 256 centroids.
    """
    if n < 2:
        raise EmbedkdError(
            f"an ivfpq index needs at least 2 vectors to train, got {n}; use --index-type flat"
        )
    nlist = spec.nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
    nbits = spec.pq_nbits or max(1, min(8, int(math.log2(max(2, n // 39)))))
    m = spec.pq_m or max(d for d in range(1, min(64, max(1, dim // 4)) + 1) if dim % d == 0)
    if dim % m:
        raise ConfigError(f"pq_m={m} must divide the dimension {dim}")
    if nlist > n:
        raise ConfigError(f"nlist={nlist} exceeds the {n} training vectors")
    train = min(n, spec.train_size or max(64 * nlist, 64 * 2**nbits, 10_000))
    nprobe = spec.nprobe or min(nlist, max(8, nlist // 16))
    return {"nlist": nlist, "pq_m": m, "pq_nbits": nbits, "train_size": train, "nprobe": nprobe}


def hnsw_params(n: int, spec: IndexSpec = IndexSpec()) -> dict:
    """HNSW parameters: 32 links per node (16 for small corpora), search breadth 64 (128 past 1M)."""
    return {
        "hnsw_m": spec.hnsw_m or (16 if n < 100_000 else 32),
        "hnsw_ef_search": spec.hnsw_ef_search or (64 if n < 1_000_000 else 128),
    }


def _new_shard(index_type: IndexType, dim: int, params: dict) -> faiss.Index:
    ip = faiss.METRIC_INNER_PRODUCT
    if index_type is IndexType.FLAT:
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if index_type is IndexType.HNSW:
        hnsw = faiss.IndexHNSWFlat(dim, params["hnsw_m"], ip)
        hnsw.hnsw.efSearch = params["hnsw_ef_search"]
        return faiss.IndexIDMap2(hnsw)
    ivfpq = faiss.index_factory(dim, f"IVF{params['nlist']},PQ{params['pq_m']}x{params['pq_nbits']}", ip)
    # Polysemous training only reorders codes for Hamming filtering, which search never uses; it costs
    # minutes per build and changes neither codes' distances nor recall.
    ivfpq.do_polysemous_training = False
    return ivfpq


def _shard_ids(shard: faiss.Index) -> np.ndarray:
    """The ids one shard holds: its id map (flat, hnsw) or its inverted lists (ivfpq)."""
    if hasattr(shard, "id_map"):
        return faiss.vector_to_array(shard.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(shard)
    lists = ivf.invlists
    parts = [
        faiss.rev_swig_ptr(lists.get_ids(no), lists.list_size(no)).astype(np.int64)
        for no in range(ivf.nlist)
        if lists.list_size(no)
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


class VectorIndex:
    """FAISS vectors under stable int64 ids, optionally sharded. Thread-safe (one lock).

    Build one with :meth:`create` (then :meth:`train` for ivfpq, then :meth:`add`), or load one with
    :meth:`from_shards` (see :mod:`serve.snapshot`).
    """

    def __init__(self, meta: IndexMeta, shards: Sequence[faiss.Index]) -> None:
        if len(shards) != meta.shards:
            raise EmbedkdError(f"index meta says {meta.shards} shard(s) but {len(shards)} were loaded")
        for shard in shards:
            if shard.d != meta.dim:
                raise EmbedkdError(f"index shard has dimension {shard.d}, meta says {meta.dim}")
        self.meta = meta
        self.type = IndexType(meta.index_type)
        self.shards = list(shards)
        self._lock = threading.Lock()
        for shard in self.shards:  # sharded searches cannot take per-call parameters
            if self.type is IndexType.IVFPQ:
                faiss.extract_index_ivf(shard).nprobe = int(meta.params.get("nprobe", 8))
            elif self.type is IndexType.HNSW:
                faiss.downcast_index(shard.index).hnsw.efSearch = int(meta.params.get("hnsw_ef_search", 64))
        self._searcher = self._make_searcher()

    @classmethod
    def create(cls, meta: IndexMeta) -> VectorIndex:
        """An empty index of ``meta.index_type`` with ``meta.params`` (ivfpq still needs :meth:`train`)."""
        kind = IndexType(meta.index_type)
        return cls(meta, [_new_shard(kind, meta.dim, meta.params) for _ in range(meta.shards)])

    @classmethod
    def from_shards(cls, meta: IndexMeta, shards: Sequence[faiss.Index]) -> VectorIndex:
        return cls(meta, shards)

    def _make_searcher(self) -> faiss.Index:
        if len(self.shards) == 1:
            return self.shards[0]
        searcher = faiss.IndexShards(self.meta.dim, True, False)  # threaded, keep our ids
        for shard in self.shards:
            searcher.add_shard(shard)
        return searcher

    @property
    def ntotal(self) -> int:
        return int(sum(s.ntotal for s in self.shards))

    @property
    def is_trained(self) -> bool:
        return all(s.is_trained for s in self.shards)

    @property
    def supports_remove(self) -> bool:
        return self.type is not IndexType.HNSW

    def prepare(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors as FAISS wants them: contiguous float32 ``(n, dim)``, normalised if the meta says so.

        Every search, add and train passes here first, so it also applies ``--threads`` to FAISS in the
        calling thread (:mod:`serve.threads`: its OpenMP count is per thread)."""
        threads.apply()
        vecs = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, self.meta.dim))
        if not np.isfinite(vecs).all():
            raise EmbedkdError("vectors contain NaN or inf")
        if self.meta.normalize:
            vecs = vecs.copy()
            faiss.normalize_L2(vecs)
        return vecs

    def train(self, vectors: np.ndarray) -> None:
        """Train every untrained shard (ivfpq) on ``vectors`` (a sample of the corpus)."""
        vecs = self.prepare(vectors)
        with self._lock:
            for shard in self.shards:
                if not shard.is_trained:
                    shard.train(vecs)

    def add(self, ids: Sequence[int] | np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors under ``ids`` (ids must not be present already)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vecs = self.prepare(vectors)
        if len(ids) != len(vecs):
            raise EmbedkdError(f"{len(ids)} ids for {len(vecs)} vectors")
        if not self.is_trained:
            raise EmbedkdError("the ivfpq index is not trained yet")
        with self._lock:
            for s, shard in enumerate(self.shards):
                mine = ids % len(self.shards) == s
                if mine.any():
                    shard.add_with_ids(vecs[mine], ids[mine])

    def remove(self, ids: Sequence[int] | np.ndarray) -> int:
        """Remove ``ids``; returns how many were removed (0 for hnsw, whose caller drops stale ids)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if not self.supports_remove or len(ids) == 0:
            return 0
        removed = 0
        with self._lock:
            for s, shard in enumerate(self.shards):
                mine = ids[ids % len(self.shards) == s]
                if len(mine):
                    removed += int(shard.remove_ids(faiss.IDSelectorBatch(mine)))
        return removed

    def search(
        self, queries: np.ndarray, k: int, accept: Accept | None = None, overfetch: int = 4
    ) -> list[list[tuple[int, float]]]:
        """Top-``k`` ``(id, score)`` per query row, best first (see :meth:`search_bounded`, unbounded)."""
        return self.search_bounded(queries, k, accept, overfetch)[0]

    def search_bounded(
        self,
        queries: np.ndarray,
        k: int,
        accept: Accept | None = None,
        overfetch: int = 4,
        max_candidates: int | None = None,
    ) -> tuple[list[list[tuple[int, float]]], list[bool]]:
        """Top-``k`` ``(id, score)`` per query row, best first, and per row whether it was cut short.

        With ``accept`` (a metadata filter, or a check that an id is still live), ``k * overfetch``
        hits are fetched and the rejected ones dropped; rows still short of ``k`` are searched again
        with ``overfetch`` times more, until they have ``k``, the whole index was asked, or
        ``max_candidates`` hits were examined: such a row returns what it found, flagged ``True``.
        ``accept`` sees each candidate id of a row once.
        """
        q = self.prepare(queries)
        out: list[list[tuple[int, float]]] = [[] for _ in range(len(q))]
        partial = [False] * len(q)
        n = self.ntotal
        if n == 0 or k < 1:
            return out, partial
        cap = n if max_candidates is None else min(n, max(k, int(max_candidates)))
        fetch = min(cap, k if accept is None else k * max(1, overfetch))
        seen: list[dict[int, bool]] = [{} for _ in range(len(q))]
        todo = list(range(len(q)))
        while todo:
            scores, ids = self._raw_search(q[todo], fetch)
            short = []
            for row, qi in enumerate(todo):
                hit_ids, hit_scores = self._accepted(qi, ids[row], scores[row], accept, seen[qi])
                if len(hit_ids) >= k or fetch >= cap:
                    out[qi] = [(int(i), float(s)) for i, s in zip(hit_ids[:k], hit_scores[:k])]
                    partial[qi] = len(hit_ids) < k and fetch < n
                else:
                    short.append(qi)
            todo, fetch = short, min(cap, fetch * max(2, overfetch))
        return out, partial

    @staticmethod
    def _accepted(qi: int, ids: np.ndarray, scores: np.ndarray, accept: Accept | None, seen: dict):
        valid = ids >= 0
        ids, scores = ids[valid], scores[valid]
        if accept is None or not len(ids):
            return ids, scores
        new = np.array([i for i in ids.tolist() if i not in seen], dtype=np.int64)
        if len(new):
            seen.update(zip(new.tolist(), np.asarray(accept(qi, new), dtype=bool).tolist()))
        keep = np.array([seen.get(i, False) for i in ids.tolist()], dtype=bool)
        return ids[keep], scores[keep]

    def ids(self) -> np.ndarray:
        """Every id in the index (int64; an hnsw index still holds the ids it could not remove)."""
        with self._lock:
            parts = [_shard_ids(shard) for shard in self.shards]
        return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)

    def _raw_search(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        params = None
        if self.type is IndexType.HNSW:
            params = faiss.SearchParametersHNSW(
                efSearch=max(fetch, self.meta.params.get("hnsw_ef_search", 64))
            )
        elif self.type is IndexType.IVFPQ:
            params = faiss.SearchParametersIVF(nprobe=self.meta.params.get("nprobe", 8))
        with self._lock:
            if params is not None and len(self.shards) == 1:
                return self.shards[0].search(q, fetch, params=params)
            return self._searcher.search(q, fetch)

    def serialize_shards(self) -> list[np.ndarray]:
        """Each shard as bytes (taken under the lock, so consistent with concurrent writes)."""
        with self._lock:
            return [faiss.serialize_index(s) for s in self.shards]

    def reconstruct(self, vid: int) -> np.ndarray:
        """The stored vector of ``vid`` (flat and hnsw only)."""
        with self._lock:
            return self.shards[vid % len(self.shards)].reconstruct(int(vid))
