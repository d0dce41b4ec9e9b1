"""Where the benchmarks find things, and how their results write paths.

* :func:`data_dir`: the shared benchmark data, from one setting, ``EMBEDKD_DATA`` (default
  ``../shared/data`` next to the project).
* :func:`rel`: a path as the result files record it: relative to the project root (``runs/...``,
  ``../shared/data/...``), so a result file reads the same on every machine.
* :func:`command_line`: the command that ran a benchmark, its paths written with :func:`rel`.

Benchmarks are run from the project root (``python bench/NAME.py ...``), so a relative path on their
command lines (``runs/leaf-minilm``) means the same thing as in the results.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # the benchmarks import embedkd, eval and serve from this checkout
    sys.path.insert(0, str(REPO))
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def data_dir() -> Path:
    """The shared benchmark data folder: ``$EMBEDKD_DATA``, default ``<project>/../shared/data``."""
    return Path(os.environ.get("EMBEDKD_DATA") or REPO.parent / "shared" / "data")


def rel(path: str | Path | None) -> str | None:
    """``path`` relative to the project root, for result files; anything that is not a path stays as is.

    An absolute path (or a relative one that exists) inside the project becomes ``runs/...``; one next
    to it ``../shared/data/...``; one inside an installed package ``site-packages/...``. Model ids
    (``sentence-transformers/all-MiniLM-L6-v2``) and other strings come back unchanged.
    """
    if path is None:
        return None
    text = str(path)
    if not text or (not os.path.isabs(text) and not os.path.exists(text)):
        return text
    full = Path(os.path.abspath(text))
    if full == REPO or REPO in full.parents:
        return full.relative_to(REPO).as_posix()
    if REPO.parent in full.parents and REPO.parent != Path(full.anchor):
        return Path(os.path.relpath(full, REPO)).as_posix()
    if "site-packages" in full.parts:
        return "/".join(full.parts[full.parts.index("site-packages") :])
    return text


def rel_arg(arg: str) -> str:
    """One command-line token with its path made relative (also ``N:PATH`` and ``--flag=PATH`` forms)."""
    for sep in ("=", ":"):
        head, found, tail = arg.partition(sep)
        if found and os.path.isabs(tail):
            return f"{head}{sep}{rel(tail)}"
    return rel(arg) or arg


def rel_command(tokens: Iterable[str]) -> str:
    """A command line (tokens) with every path token relative to the project, shell-quoted."""
    return shlex.join(rel_arg(t) for t in tokens)


def command_line(
    script: str, argv: list[str] | None = None, *, prefix: str = "python", env: bool = False
) -> str:
    """The command that ran ``bench/<script>``: ``prefix`` (``python``), the script, its arguments.

    Args:
        script: the benchmark file name, e.g. ``ontology_iu.py``.
        argv: its arguments (default ``sys.argv[1:]``).
        prefix: what ran it, e.g. ``nice -n 15 python``.
        env: also record the thread settings (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``) it ran under.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    head = [f"{k}={os.environ[k]}" for k in THREAD_VARS if env and k in os.environ]
    return " ".join([*head, prefix, f"bench/{script}", rel_command(args)]).rstrip()
