"""Teacher encoding on Ray Data: a pool of actors, each loading the teacher once, fills the teacher cache.

The texts the cache lacks become a Ray dataset of ``(row, text)`` blocks, one block per chunk;
``map_batches`` sends each block to an :class:`EncodeActor` (a callable class, so the teacher loads once
per actor; fractional CPUs, so the actors leave room for Ray's read tasks), and the driver commits every
finished chunk to the :class:`~embedkd.cache.TeacherCache` as it arrives, in whatever order. The ``row``
column puts each vector back in its place, so the output order is the input order.

Without an address, :func:`connect` starts a Ray cluster on this machine; with one (``host:port``,
``ray://host:port``, ``auto``) it joins that cluster. Every node then needs embedkd installed with its
``scale`` extra and the teacher's model under the same name or path.
"""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from embedkd.engines import EncodeStats
from embedkd.engines.recipe import TeacherRecipe, recipe_of
from embedkd.errors import ConfigError, EmbedkdError

if TYPE_CHECKING:
    from embedkd.cache import TeacherCache
    from embedkd.teachers import Teacher

logger = logging.getLogger(__name__)

INSTALL_HINT = 'pip install -e ".[scale]"'
DEFAULT_GCS_PORT = 6379
CHUNKS_PER_ACTOR = 4  # blocks queued per actor: enough to balance the pool, few enough to keep chunks full


def import_ray():
    """The ``ray`` module with Ray Data, or a clear error that names the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (Ray core alone lacks Ray Data)
    except ImportError as exc:
        raise EmbedkdError(
            f"the ray engine needs Ray Data, which is not installed ({exc}); run `{INSTALL_HINT}`"
        ) from None
    return ray


def check_reachable(address: str, timeout_s: float) -> None:
    """Fail fast when nothing answers at a Ray address (``ray.init`` itself waits far longer).

    Raises:
        EmbedkdError: the address is malformed, or no connection opens within ``timeout_s``.
    """
    if address == "auto":
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rstrip("/").rpartition(":")
    if not sep:
        host, port = hostport, str(DEFAULT_GCS_PORT)
    if not host or not port.isdigit():
        raise ConfigError(f"Ray address must be host:port, ray://host:port or auto, got {address!r}")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise EmbedkdError(
            f"no Ray cluster answers at {address!r} within {timeout_s:g} s ({exc}); start one with "
            "`ray start --head` or leave out the address to run Ray on this machine"
        ) from None


def connect(address: str | None = None, *, timeout_s: float = 5.0) -> bool:
    """Join the Ray cluster at ``address``, or start one on this machine when ``address`` is None.

    A Ray session this process already holds is reused as it is.

    Returns:
        Whether this call started the session (and so should end it).

    Raises:
        EmbedkdError: Ray is not installed, or the cluster does not answer.
    """
    ray = import_ray()
    if address:
        check_reachable(address, timeout_s)
    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        where = f"at {address!r}" if address else "on this machine"
        raise EmbedkdError(f"cannot start or join a Ray cluster {where}: {exc}") from exc
    logger.info("Ray: %s", ray.cluster_resources())
    return True


class EncodeActor:
    """A Ray Data callable class: loads the teacher once, then embeds each block of ``(row, text)``.

    Args:
        recipe: how to load the teacher.
        role: prompt role of every text.
        batch_size: teacher batch size.
        device: torch device (None: torch chooses).
        threads: torch threads (None: Ray's ``OMP_NUM_THREADS``, the actor's CPUs rounded down, at least 1).
    """

    def __init__(
        self,
        recipe: TeacherRecipe,
        role: str | None,
        batch_size: int,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        if threads:
            import torch

            torch.set_num_threads(threads)
        self.teacher = recipe.build(device)
        self.role, self.batch_size = role, batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = self.teacher.encode([str(t) for t in batch["text"]], self.role, batch_size=self.batch_size)
        return {"row": np.asarray(batch["row"]), "vector": vectors}


class RayEngine:
    """Teacher encoding on Ray Data; see the module docstring.

    Args:
        address: Ray cluster address; None starts a Ray cluster on this machine.
        actors: size of the actor pool (default: one per CPU of the cluster, or per ``gpus_per_actor``).
        cpus_per_actor: CPUs Ray reserves for each actor (fractional leaves room for read tasks).
        gpus_per_actor: GPUs for each actor (0: the teacher runs on CPU).
        threads_per_actor: torch threads in each actor (default: ``cpus_per_actor`` rounded down, >= 1).
        connect_timeout_s: how long an address may take to answer.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        actors: int | None = None,
        cpus_per_actor: float = 0.5,
        gpus_per_actor: float = 0.0,
        threads_per_actor: int | None = None,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if actors is not None and actors < 1:
            raise ConfigError(f"actors must be >= 1, got {actors}")
        if cpus_per_actor <= 0 or gpus_per_actor < 0:
            raise ConfigError(
                f"cpus_per_actor must be > 0 and gpus_per_actor >= 0, got {cpus_per_actor}, {gpus_per_actor}"
            )
        if threads_per_actor is not None and threads_per_actor < 1:
            raise ConfigError(f"threads_per_actor must be >= 1, got {threads_per_actor}")
        import_ray()
        if address:
            check_reachable(address, connect_timeout_s)  # a bad address fails before any model loads
        self.address, self.actors = address, actors
        self.cpus_per_actor, self.gpus_per_actor = cpus_per_actor, gpus_per_actor
        self.threads_per_actor, self.connect_timeout_s = threads_per_actor, connect_timeout_s
        self.stats = EncodeStats()
        self._started = False

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
        """Vectors of ``texts`` (in order), embedding on Ray only those ``cache`` lacks.

        Raises:
            EmbedkdError: Ray is missing or unreachable, the teacher cannot run on Ray, or an actor failed
                (every chunk committed before the failure stays in the cache).
        """
        started = time.perf_counter()
        keys, todo = cache.missing(teacher, texts, role)
        self.stats.requested += len(texts)
        self.stats.cached += len(set(keys)) - len(todo)
        if todo:
            logger.info(
                "teacher %s on Ray: embedding %d new texts (%d cached)",
                teacher.id,
                len(todo),
                len(set(keys)) - len(todo),
            )
            self._run(cache, recipe_of(teacher), list(todo.items()), role, batch_size, show_progress)
            logger.info(
                "teacher on Ray: %d texts in %.1f s on %d actor(s)",
                len(todo),
                time.perf_counter() - started,
                self.stats.actors,
            )
        self.stats.seconds += time.perf_counter() - started
        return cache.get(keys)

    def _run(
        self,
        cache: TeacherCache,
        recipe: TeacherRecipe,
        pending: list[tuple[bytes, str]],
        role: str | None,
        batch_size: int,
        show_progress: bool,
    ) -> None:
        """Embed ``pending`` on the actor pool, committing each finished chunk to ``cache``."""
        from tqdm.auto import tqdm

        ray = import_ray()
        self._started = connect(self.address, timeout_s=self.connect_timeout_s) or self._started
        ray.data.DataContext.get_current().enable_progress_bars = False  # ours below counts texts
        actors = self._pool_size(ray)
        rows_per_block = _chunk_rows(len(pending), actors, batch_size, cache)
        actors = min(actors, -(-len(pending) // rows_per_block))  # an actor without a block would only load
        self.stats.actors = max(self.stats.actors, actors)
        dataset = _blocks(ray, [text for _, text in pending], rows_per_block)
        encoded = dataset.map_batches(
            EncodeActor,
            fn_constructor_kwargs={
                "recipe": recipe,
                "role": role,
                "batch_size": batch_size,
                "device": None if self.gpus_per_actor else "cpu",
                "threads": self.threads_per_actor,
            },
            batch_size=None,  # one call per block: a block is one cache chunk
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=self.cpus_per_actor,
            num_gpus=self.gpus_per_actor or None,
        )
        with tqdm(total=len(pending), desc="teacher (ray)", unit="text", disable=not show_progress) as bar:
            try:
                for batch in encoded.iter_batches(batch_size=None, batch_format="numpy"):
                    rows = batch["row"].tolist()
                    cache.add([pending[r][0] for r in rows], np.asarray(batch["vector"], dtype=np.float32))
                    self.stats.encoded += len(rows)
                    self.stats.chunks += 1
                    bar.update(len(rows))
            except ray.exceptions.RayError as exc:
                raise EmbedkdError(
                    f"teacher encoding on Ray failed after {self.stats.chunks} committed chunk(s) "
                    f"(kept in {cache.dir}): {_root_cause(exc)}"
                ) from exc

    def _pool_size(self, ray) -> int:
        if self.actors:
            return self.actors
        resources = ray.cluster_resources()
        if self.gpus_per_actor:
            return max(1, int(resources.get("GPU", 0) / self.gpus_per_actor))
        return max(1, int(resources.get("CPU", 1)))

    def close(self) -> None:
        """End the Ray session if this engine started it (a session the caller holds stays)."""
        if self._started:
            import_ray().shutdown()
            self._started = False

    def __enter__(self) -> RayEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _chunk_rows(n: int, actors: int, batch_size: int, cache: TeacherCache) -> int:
    """Rows per block: at most the cache's chunk, at least one teacher batch, several blocks per actor."""
    return max(1, min(cache.chunk_size, max(batch_size, -(-n // (CHUNKS_PER_ACTOR * actors)))))


def _blocks(ray, texts: list[str], rows_per_block: int):
    """A Ray dataset of ``row``/``text`` with one block per ``rows_per_block`` texts."""
    import pyarrow as pa

    table = pa.table({"row": np.arange(len(texts), dtype=np.int64), "text": pa.array(texts, pa.string())})
    return ray.data.from_arrow([table.slice(i, rows_per_block) for i in range(0, len(texts), rows_per_block)])


def _root_cause(exc: BaseException) -> str:
    """The first line of the error an actor raised (Ray wraps it in several layers and its traceback)."""
    chain: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and all(seen is not c for c in chain):
        chain.append(seen)
        seen = getattr(seen, "cause", None) or seen.__cause__
    for error in reversed(chain):
        if type(error).__module__.startswith("embedkd"):  # not Ray's dynamic RayTaskError(EmbedkdError)
            return str(error)
    found = [m for e in chain for m in _ERROR_LINE.finditer(str(e))]
    raised = [m for m in found if m.group(1) != "ray."] or found  # the actor's own error, not Ray's wrapper
    if raised:
        return raised[-1].group(2)
    first = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {first[0] if first else ''}"


_ERROR_LINE = re.compile(r"^(ray\.)?(?:\w+\.)*(\w+(?:Error|Exception): .+)$", re.MULTILINE)
