"""Where teacher encoding runs: in this process (``local``) or on a Ray cluster (``ray``).

Both engines read and fill the same :class:`~embedkd.cache.TeacherCache`: only the texts it lacks are
embedded, and every finished chunk is committed as it arrives, so a killed run loses at most the chunks
in flight and a rerun embeds nothing that was committed. Ray is imported only by the ``ray`` engine
(``pip install -e ".[scale]"``).

Example::

    from embedkd.cache import TeacherCache
    from embedkd.engines import make_engine

    cache = TeacherCache.for_teacher(teacher)
    with make_engine("ray", address=None) as engine:  # None: a local Ray cluster on this machine
        vectors = engine.encode(cache, teacher, texts, "document")
    print(engine.stats)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

import numpy as np

from embedkd.errors import ConfigError

if TYPE_CHECKING:
    from embedkd.cache import TeacherCache
    from embedkd.teachers import Teacher

__all__ = ["EncodeStats", "Engine", "EngineKind", "LocalEngine", "make_engine"]

logger = logging.getLogger(__name__)


class EngineKind(str, Enum):
    """Where the teacher runs."""

    LOCAL = "local"  # in this process
    RAY = "ray"  # Ray Data actors, on this machine or a cluster


@dataclass
class EncodeStats:
    """What an engine did, summed over its :meth:`Engine.encode` calls.

    Attributes:
        requested: texts asked for (repeats counted).
        cached: distinct texts found in the cache (not embedded again).
        encoded: distinct texts the teacher embedded.
        chunks: chunks committed to the cache.
        seconds: wall time of the calls.
        actors: the largest Ray actor pool used (0: the teacher ran in this process).
    """

    requested: int = 0
    cached: int = 0
    encoded: int = 0
    chunks: int = 0
    seconds: float = 0.0
    actors: int = 0


class Engine(Protocol):
    """Embeds texts with a teacher through its cache; a context manager that releases what it started."""

    stats: EncodeStats

    def encode(
        self,
        cache: TeacherCache,
        teacher: Teacher,
        texts: Sequence[str],
        role: str | None = "document",
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Vectors of ``texts`` (in order), embedding only those ``cache`` lacks."""
        ...

    def close(self) -> None:
        """Release what the engine started (a Ray session); the engine can still be used after."""
        ...

    def __enter__(self) -> Engine: ...

    def __exit__(self, *exc: object) -> None: ...


class LocalEngine:
    """The teacher in this process: :meth:`TeacherCache.encode`, with its work counted."""

    def __init__(self) -> None:
        self.stats = EncodeStats()

    def encode(
        self,
        cache: TeacherCache,
        teacher: Teacher,
        texts: Sequence[str],
        role: str | None = "document",
        *,
        batch_size: int = 32,
        show_progress: bool = False,
    ) -> np.ndarray:
        """Vectors of ``texts`` (in order), embedding only those ``cache`` lacks."""
        started = time.perf_counter()
        _, todo = cache.missing(teacher, texts, role)
        vectors = cache.encode(teacher, texts, role, batch_size=batch_size, show_progress=show_progress)
        self.stats.requested += len(texts)
        self.stats.encoded += len(todo)
        self.stats.cached += len(set(texts)) - len(todo)
        self.stats.chunks += -(-len(todo) // cache.chunk_size)
        self.stats.seconds += time.perf_counter() - started
        return vectors

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> LocalEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_engine(
    kind: EngineKind | str = EngineKind.LOCAL, *, address: str | None = None, **options
) -> Engine:
    """An engine by name.

    Args:
        kind: ``local`` or ``ray``.
        address: Ray cluster address (``host:port``, ``ray://host:port`` or ``auto``); None starts a
            local Ray cluster. Only for ``ray``.
        **options: further :class:`~embedkd.engines.ray_engine.RayEngine` settings (``actors``,
            ``cpus_per_actor``, ``gpus_per_actor``, ``threads_per_actor``, ``connect_timeout_s``).

    Raises:
        ConfigError: an unknown engine, or Ray settings given to the local engine.
    """
    try:
        kind = EngineKind(kind)
    except ValueError:
        allowed = ", ".join(k.value for k in EngineKind)
        raise ConfigError(f"engine must be one of {allowed}, got {kind!r}") from None
    if kind is EngineKind.LOCAL:
        if address or options:
            given = ["address"] * bool(address) + sorted(options)
            raise ConfigError(f"the local engine takes no Ray settings, got {', '.join(given)}")
        return LocalEngine()
    from embedkd.engines.ray_engine import RayEngine

    return RayEngine(address=address, **options)
