"""A student swapped into a ``--backend onnx`` service runs on ONNX Runtime too (serve.swap).

The swapper is handed the service's backend, quantization and threads; a swapped-in student that is not
an export is exported once into the cache, the way the start-up student is.
"""

from __future__ import annotations

import shutil
import time

import httpx
import numpy as np
import pytest
from serve_helpers import Server, build_tiny_index

from serve.service_base import encoder_runtime
from serve.swap import READY_MARKER, StudentSwapper


class _Exported:
    backend, quantized = "onnx", True


def test_stats_name_the_runtime_of_the_served_student():
    assert encoder_runtime(object()) == "torch"
    assert encoder_runtime(_Exported()) == "onnx-int8"
    plain = _Exported()
    plain.backend, plain.quantized = "openvino", False
    assert encoder_runtime(plain) == "openvino"


def test_the_swapper_loads_with_the_services_backend(tmp_path, monkeypatch):
    seen = {}

    def fake_load(spec, meta, **kwargs):
        seen.update(kwargs)
        raise RuntimeError("stop here")

    monkeypatch.setattr("serve.swap.load_query_encoder", fake_load)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    service = type("Svc", (), {"meta": None})()
    swapper = StudentSwapper(service, quantize="int8", backend="openvino", threads=3)
    with pytest.raises(Exception, match="does not load: stop here"):
        swapper.swap(tmp_path)
    assert seen == {
        "device": None,
        "quantize": "int8",
        "safetensors_only": True,
        "backend": "openvino",
        "threads": 3,
    }


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_student_swapped_into_an_onnx_service_runs_on_onnx(tmp_path, tiny_st_factory):
    teacher_path = tiny_st_factory(hidden=32, seed=0)
    build_tiny_index(tmp_path, teacher_path, 12)
    watched, cache = tmp_path / "watched", tmp_path / "embedkd-cache"
    watched.mkdir()
    args = ["--index-dir", str(tmp_path / "idx"), "--student", tiny_st_factory(hidden=32, seed=1)]
    args += [
        "--backend",
        "onnx",
        "--threads",
        "1",
        "--watch-student",
        str(watched),
        "--watch-interval",
        "0.3",
    ]
    server = Server(args, tmp_path / "server.log", env={"EMBEDKD_CACHE": str(cache)}).wait_ready(180)
    try:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            before = client.get("/stats").json()
            assert before["student_backend"] == "onnx"
            query = {"query": "heart disease cohort", "k": 3}
            old_vector = client.post("/embed", json={"texts": [query["query"]]}).json()["embeddings"][0]
            shutil.copytree(teacher_path, watched / "v2")  # safetensors, written before the marker
            (watched / "v2" / READY_MARKER).touch()
            stats = _wait_for_student(client, "v2#", server)
            hits = client.post("/search", json=query)
            new_vector = client.post("/embed", json={"texts": [query["query"]]}).json()["embeddings"][0]
    finally:
        server.stop()
    assert stats["student_backend"] == "onnx" and stats["dim"] == 32
    assert hits.status_code == 200 and len(hits.json()["results"]) == 3
    assert not np.allclose(old_vector, new_vector)  # the new student answers
    exported = sorted(p.name for p in (cache / "exported").iterdir() if p.is_dir())
    assert any(name.startswith("v2-") and name.endswith("-onnx") for name in exported), exported


def _wait_for_student(client: httpx.Client, prefix: str, server: Server) -> dict:
    deadline = time.monotonic() + 120
    while not (stats := client.get("/stats").json())["student"].startswith(prefix):
        assert time.monotonic() < deadline, server.tail()
        time.sleep(0.2)
    return stats
