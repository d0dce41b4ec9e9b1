"""Which vector store an index directory uses, recorded next to its teacher in ``meta.json``.

``meta.json`` holds the :class:`~serve.index.IndexMeta` (teacher identity, dimension, index type and
parameters) and, for an index whose vectors live outside the directory, a ``store`` object::

    "store": {"kind": "milvus", "uri": "/abs/path/scifact.db", "collection": "scifact",
              "metric": "IP", "search_params": {"ef": 64}}

No ``store`` object means ``faiss``: the FAISS snapshots and SQLite document store inside the
directory (every index built before Milvus existed reads that way).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from embedkd.errors import ConfigError, EmbedkdError
from serve.errors import ServiceStateError, StorageIOError
from serve.faults import describe
from serve.index import IndexMeta
from serve.snapshot import META_FILE, atomic_write_bytes


class StoreKind(str, Enum):
    """Where an index keeps its vectors and documents (plain strings accepted)."""

    FAISS = "faiss"  # FAISS snapshots + SQLite document store with write-ahead log, in the directory
    MILVUS = "milvus"  # one Milvus collection (Milvus Lite file or server); the directory holds meta.json

    @classmethod
    def parse(cls, value: StoreKind | str) -> StoreKind:
        try:
            return cls(getattr(value, "value", value))
        except ValueError:
            known = ", ".join(k.value for k in cls)
            raise ConfigError(f"unknown store {value!r}; expected one of {known}") from None


@dataclass(frozen=True)
class StoreConfig:
    """The ``store`` object of ``meta.json``.

    Attributes:
        kind: faiss | milvus.
        uri: Milvus: a Milvus Lite file (recorded as an absolute path) or ``http(s)://host:19530``.
        collection: Milvus collection name.
        metric: Milvus metric the collection was indexed with (IP or COSINE).
        search_params: Milvus per-search parameters chosen at build time (``ef``, ``nprobe``).
    """

    kind: StoreKind | str = StoreKind.FAISS
    uri: str | None = None
    collection: str = "embedkd"
    metric: str = "IP"
    search_params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", StoreKind.parse(self.kind))
        if self.kind is StoreKind.MILVUS and not self.uri:
            raise ConfigError("a Milvus store needs a URI (a .db file or http://host:19530)")

    def to_dict(self) -> dict:
        return {**asdict(self), "kind": self.kind.value}

    @classmethod
    def from_dict(cls, data: dict) -> StoreConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def read_store_config(index_dir: str | Path) -> StoreConfig:
    """The store ``index_dir`` records (``faiss`` when ``meta.json`` names none).

    Raises:
        ServiceStateError: the ``store`` object is not a valid store description.
        StorageIOError: ``meta.json`` cannot be read.
    """
    path = Path(index_dir) / META_FILE
    if not Path(index_dir).is_dir():
        raise EmbedkdError(f"index directory {index_dir} does not exist (build it with `embedkd index`)")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise EmbedkdError(f"{index_dir} is not an embedkd index directory (no {META_FILE})") from None
    except OSError as exc:
        raise StorageIOError(f"cannot read {path} ({describe(exc)})") from exc
    except ValueError as exc:
        raise ServiceStateError(f"{path} is corrupt ({exc}); restore it from a backup") from exc
    raw = data.get("store") if isinstance(data, dict) else None
    if raw is None:
        return StoreConfig()
    try:
        return StoreConfig.from_dict(raw)
    except (ConfigError, TypeError, AttributeError) as exc:
        raise ServiceStateError(f"{path}: its 'store' entry {raw!r} is invalid ({exc})") from exc


def write_index_meta(index_dir: str | Path, meta: IndexMeta, store: StoreConfig) -> None:
    """Write ``meta.json`` atomically: ``meta`` and, unless it is FAISS, the ``store`` object."""
    data = meta.to_dict()
    if store.kind is not StoreKind.FAISS:
        data["store"] = store.to_dict()
    atomic_write_bytes(Path(index_dir) / META_FILE, json.dumps(data, indent=2).encode())
