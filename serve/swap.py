"""Hot swap of the query encoder: a new student replaces the served one without a failed request.

:meth:`StudentSwapper.swap` loads the new student next to the old one (safetensors weights only),
checks it against the index (output dimension; the teacher it records, see
:func:`serve.encoders.check_student_teacher`), warms it up with a few forward passes, then switches
with one reference swap under the service's encoder lock (:meth:`SearchService.swap_encoder`). A batch
already running keeps its reference to the old student and finishes on it; the old student is freed
when the last such batch lets go of it.

Where students come from:

* ``POST /admin/student`` names a folder inside ``--students-dir`` (anything resolving outside it,
  symlinks included, is refused);
* ``--watch-student DIR`` (:class:`StudentWatcher`) polls ``DIR`` and swaps in a student folder
  (``DIR`` itself or a subfolder) once its completion marker ``READY`` appears or is touched again:
  write the model first, the marker last.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
import threading
import time
from pathlib import Path

from fastapi.concurrency import run_in_threadpool

from embedkd.errors import EmbedkdError
from serve.encoders import load_query_encoder

logger = logging.getLogger(__name__)

READY_MARKER = "READY"
# Weight formats that unpickle (run code) when loaded; a swapped-in student must not carry any.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
WARMUP_TEXTS = ["warm-up", "a somewhat longer warm-up query about several different things"]
# Loading a student is mostly Python holding the GIL (module construction, weight loading): at the
# default 5 ms switch interval every step of a request waits up to 5 ms for its turn, and a swap
# under load stalled requests for the whole load. While a swap loads, the interval is this short.
SWAP_SWITCH_INTERVAL_S = float(os.environ.get("EMBEDKD_SWAP_SWITCH_INTERVAL_S", "0.0002"))


class StudentNotFoundError(EmbedkdError):
    """The named student folder does not exist."""


class SwapBusyError(EmbedkdError):
    """Another swap is in progress."""


def resolve_student_dir(root: str | Path, name: str) -> Path:
    """The folder ``name`` inside ``root``, refusing any name that leaves ``root``.

    Raises:
        EmbedkdError: an absolute name, or one that resolves (through ``..`` or symlinks) outside.
        StudentNotFoundError: no such folder.
    """
    base = Path(root).resolve()
    if not name.strip() or Path(name).is_absolute():
        raise EmbedkdError(f"student {name!r} must be a folder name inside --students-dir")
    path = (base / name).resolve()
    if path == base or not path.is_relative_to(base):
        raise EmbedkdError(f"student {name!r} is outside --students-dir; only folders inside it load")
    if not path.is_dir():
        raise StudentNotFoundError(f"no student folder {name!r} in --students-dir")
    return path


def check_safetensors(folder: Path) -> None:
    """Refuse a folder whose weights are not all safetensors (training checkpoints aside).

    Raises:
        EmbedkdError: a pickle-format weight file, or no safetensors file at all.
    """
    files = [
        p.relative_to(folder)
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith("checkpoint") for part in p.relative_to(folder).parts)
    ]
    unsafe = sorted(str(p) for p in files if p.suffix in PICKLE_SUFFIXES)
    if unsafe:
        raise EmbedkdError(
            f"student {folder.name!r} holds pickle-format weights ({', '.join(unsafe[:3])}); "
            "only safetensors students are loaded (re-save it with safe_serialization)"
        )
    if not any(p.suffix == ".safetensors" for p in files):
        raise EmbedkdError(f"student {folder.name!r} has no .safetensors weights")


class StudentSwapper:
    """Loads, checks and warms a student, then makes it the service's query encoder.

    The new student runs as the service's start-up one does: the same ``backend`` and ``quantize``
    (a student that is not an ``embedkd export`` folder is exported once into the cache for a fast
    backend, as at start-up) and the same runtime ``threads``.

    Args:
        service: the :class:`~serve.service.SearchService`.
        device: torch device for the new student (as the service's).
        quantize: ``int8`` to quantize it like the served one (None: as saved).
        backend: the query encoder's runtime, ``torch``, ``onnx`` or ``openvino`` (as the service's).
        threads: CPU threads of the ONNX / OpenVINO runtime (as the service's; None: all cores).
        monitor: the alignment monitor, whose window restarts with the new student.
    """

    def __init__(
        self,
        service,
        *,
        device: str | None = None,
        quantize: str | None = None,
        backend: str = "torch",
        threads: int | None = None,
        monitor=None,
    ):
        self.service, self.device, self.quantize, self.monitor = service, device, quantize, monitor
        self.backend, self.threads = backend, threads
        self._lock = threading.Lock()

    def swap(self, folder: str | Path) -> dict:
        """Serve queries with the student in ``folder`` (blocking: call it off the event loop).

        Returns:
            ``student``, ``previous``, ``dim``, ``load_ms``, ``warmup_ms``.

        Raises:
            SwapBusyError: another swap is running.
            EmbedkdError: unsafe weights, wrong dimension or teacher, or a folder that does not load.
        """
        if not self._lock.acquire(blocking=False):
            raise SwapBusyError("another student swap is in progress; try again when it is done")
        try:
            folder = Path(folder)
            check_safetensors(folder)
            start = time.perf_counter()
            with _short_gil_turns(SWAP_SWITCH_INTERVAL_S):
                encoder = self._load(folder)
                loaded = time.perf_counter()
                for n in (1, len(WARMUP_TEXTS)):  # first passes allocate; keep that off live requests
                    encoder.encode(WARMUP_TEXTS[:n], "query")
            warmed = time.perf_counter()
            old = self.service.swap_encoder(encoder)
            if self.monitor is not None:
                self.monitor.reset(self.service.encoder_generation)
        finally:
            self._lock.release()
        logger.info("query encoder swapped: %s -> %s", old.name, encoder.name)
        return {
            "student": encoder.name,
            "previous": old.name,
            "dim": encoder.dim,
            "load_ms": round((loaded - start) * 1000, 1),
            "warmup_ms": round((warmed - loaded) * 1000, 1),
        }

    def _load(self, folder: Path):
        meta = self.service.meta
        try:
            return load_query_encoder(
                str(folder),
                meta,
                device=self.device,
                quantize=self.quantize,
                safetensors_only=True,
                backend=self.backend,
                threads=self.threads,
            )
        except EmbedkdError:
            raise
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise EmbedkdError(f"student {folder.name!r} does not load: {exc}") from exc


_switch_lock = threading.Lock()


@contextlib.contextmanager
def _short_gil_turns(seconds: float):
    """Within the block, threads hand the GIL over every ``seconds`` (``sys.setswitchinterval``), and
    the garbage collector waits; what the block built is then frozen (``gc.freeze``), as the service
    froze what it built at start-up, so later collections do not walk the model's objects.

    The setting is process-wide: the previous value comes back on exit. Swaps never overlap
    (:class:`StudentSwapper` refuses a second one), the lock only guards against other callers.
    """
    if seconds <= 0:
        yield
        return
    with _switch_lock:
        before, collecting = sys.getswitchinterval(), gc.isenabled()
        sys.setswitchinterval(min(before, seconds))
        gc.disable()  # a full collection amid a model's construction holds the GIL for ~0.3 s
        try:
            yield
        finally:
            gc.freeze()  # the new student's objects join the start-up ones no collection scans again
            sys.setswitchinterval(before)
            if collecting:
                gc.enable()


class StudentWatcher:
    """Polls ``folder`` and swaps in the newest student whose ``READY`` marker appeared since the last look.

    Markers present at start-up are taken as already seen; touching one again re-loads that folder.
    A student that fails its checks is logged and skipped until its marker changes.
    """

    def __init__(self, folder: str | Path, swapper: StudentSwapper, interval: float = 2.0) -> None:
        self.folder, self.swapper, self.interval = Path(folder), swapper, interval
        self.seen = self._markers()

    def _markers(self) -> dict[Path, int]:
        candidates = [self.folder, *(p for p in sorted(self.folder.iterdir()) if p.is_dir())]
        out = {}
        for path in candidates:
            try:
                out[path] = (path / READY_MARKER).stat().st_mtime_ns
            except OSError:
                continue
        return out

    def poll(self) -> dict | None:
        """One look: swap in the newest newly ready student; returns the swap's answer, or None."""
        markers = self._markers()
        new = {path: mtime for path, mtime in markers.items() if self.seen.get(path) != mtime}
        if not new:
            return None
        path = max(new, key=new.__getitem__)
        try:
            result = self.swapper.swap(path)
        except SwapBusyError:
            return None  # not marked seen: retried at the next look
        except EmbedkdError as exc:
            logger.error("watched student %s not swapped in: %s", path, exc)
            result = None
        self.seen = {**self.seen, **new}
        return result

    async def run(self) -> None:
        """Poll every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await run_in_threadpool(self.poll)
            except Exception:  # noqa: BLE001 - keep watching after an unexpected failure
                logger.exception("student watcher: poll failed")
