"""The process's CPU thread count for encoding (torch) and search (FAISS), in every thread that works.

torch's intra-op thread count is process-wide, but FAISS's OpenMP count is per calling thread: a
thread that never set it (the micro-batcher's encoding thread, the request thread pool, the monitor)
searches with one OpenMP thread per core, whatever ``--threads`` says, and the idle OpenMP workers
spin for a while after each search, on the cores the query encoder needs. :func:`set_threads`
records the count; :func:`apply` sets it in the calling thread the first time that thread searches
or writes (a thread-local check afterwards).
"""

from __future__ import annotations

import threading

_wanted: int | None = None
_local = threading.local()


def set_threads(n: int) -> None:
    """Use ``n`` CPU threads for encoding (torch) and search (FAISS), in this and every later thread."""
    import faiss
    import torch

    global _wanted
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    _wanted = n
    torch.set_num_threads(n)
    faiss.omp_set_num_threads(n)
    _local.n = n


def apply() -> None:
    """Set FAISS's OpenMP thread count in the calling thread, once, when :func:`set_threads` chose one."""
    if _wanted is not None and getattr(_local, "n", None) != _wanted:
        import faiss

        faiss.omp_set_num_threads(_wanted)
        _local.n = _wanted


def wanted() -> int | None:
    """The count :func:`set_threads` chose (``None``: the libraries' defaults)."""
    return _wanted
