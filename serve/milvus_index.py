"""Milvus vector index types: which target offers which, and the build and search parameters used.

Milvus Lite (a local ``*.db`` file) builds FLAT, HNSW, IVF_FLAT and IVF_SQ8; a Milvus server also
IVF_PQ. Milvus Lite *accepts* an IVF_PQ index when it is created and fails only when the collection is
next loaded (after a flush or a restart), so the check here happens before anything is created.
"""

from __future__ import annotations

from enum import Enum

from embedkd.errors import ConfigError


class MilvusIndexType(str, Enum):
    """A Milvus vector index (plain strings accepted, any case; ``ivfpq`` is FAISS's name for ``ivf_pq``)."""

    FLAT = "flat"
    HNSW = "hnsw"
    IVF_FLAT = "ivf_flat"
    IVF_SQ8 = "ivf_sq8"
    IVF_PQ = "ivf_pq"

    @classmethod
    def parse(cls, value: MilvusIndexType | str) -> MilvusIndexType:
        """``value`` as an index type.

        Raises:
            ConfigError: an unknown name, listing the known ones.
        """
        if isinstance(value, cls):
            return value
        name = str(value).strip().lower()
        try:
            return cls({"ivfpq": "ivf_pq", "ivfflat": "ivf_flat", "ivfsq8": "ivf_sq8"}.get(name, name))
        except ValueError:
            known = ", ".join(t.value for t in cls)
            raise ConfigError(f"unknown Milvus index type {value!r}; expected one of {known}") from None

    @property
    def milvus_name(self) -> str:
        return self.value.upper()


LITE_INDEX_TYPES = frozenset(
    {MilvusIndexType.FLAT, MilvusIndexType.HNSW, MilvusIndexType.IVF_FLAT, MilvusIndexType.IVF_SQ8}
)
SERVER_INDEX_TYPES = frozenset(MilvusIndexType)
METRICS = ("IP", "COSINE")


def check_supported(kind: MilvusIndexType, lite: bool) -> None:
    """Raise a :class:`ConfigError` when the target (Milvus Lite or a server) cannot build ``kind``."""
    offered = LITE_INDEX_TYPES if lite else SERVER_INDEX_TYPES
    if kind not in offered:
        names = ", ".join(sorted(t.value for t in offered))
        where = "Milvus Lite (a local .db file)" if lite else "this Milvus server"
        hint = "; use a Milvus server (http://host:19530) for it" if lite else ""
        raise ConfigError(f"index type {kind.value!r} is not offered by {where}; it offers {names}{hint}")


def check_metric(metric: str) -> str:
    """``metric`` upper-cased; IP (inner product, cosine on normalised vectors) or COSINE."""
    name = str(metric).strip().upper()
    if name not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return name


def build_params(kind: MilvusIndexType, dim: int, overrides: dict | None = None) -> dict:
    """Index build parameters: Milvus's usual defaults, then ``overrides``.

    HNSW: ``M=16, efConstruction=200``; IVF: ``nlist=128`` (Milvus Lite clamps it to the vectors a
    segment holds); IVF_PQ: ``m`` = the largest divisor of ``dim`` up to ``dim/4`` (at most 64), 8 bits.
    """
    params: dict = {}
    if kind is MilvusIndexType.HNSW:
        params = {"M": 16, "efConstruction": 200}
    elif kind is not MilvusIndexType.FLAT:
        params = {"nlist": 128}
    if kind is MilvusIndexType.IVF_PQ:
        limit = min(64, max(1, dim // 4))
        params |= {"m": max(d for d in range(1, limit + 1) if dim % d == 0), "nbits": 8}
    params |= dict(overrides or {})
    if kind is MilvusIndexType.IVF_PQ and dim % int(params["m"]):
        raise ConfigError(f"IVF_PQ m={params['m']} must divide the dimension {dim}")
    return params


def search_params(kind: MilvusIndexType, k: int, overrides: dict | None = None) -> dict:
    """Per-search parameters: HNSW ``ef = max(64, k)`` (Milvus needs ef >= k), IVF ``nprobe=16``."""
    params: dict = {}
    if kind is MilvusIndexType.HNSW:
        params = {"ef": 64}
    elif kind is not MilvusIndexType.FLAT:
        params = {"nprobe": 16}
    params |= dict(overrides or {})
    if "ef" in params:
        params["ef"] = max(int(params["ef"]), k)
    return params
