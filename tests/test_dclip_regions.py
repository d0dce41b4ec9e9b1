"""Region detectors and the on-disk region-feature cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from dclip_fixtures import COLORS, make_image, make_tiny_clip

from embedkd.cache import CacheError
from embedkd.errors import ConfigError, EmbedkdError
from embedkd.methods.dclip.regions import GridDetector, _CropEncoder, encode_regions, load_detector


class _Img:
    size = (200, 150)


def test_grid_boxes_are_exact_and_deterministic():
    boxes = GridDetector((1, 2)).detect(_Img())
    assert boxes == [
        (0, 0, 200, 150),
        (0, 0, 100, 75),
        (100, 0, 200, 75),
        (0, 75, 100, 150),
        (100, 75, 200, 150),
    ]
    assert len(GridDetector().detect(_Img())) == 1 + 4 + 9
    assert load_detector("grid:1,3").id == "grid:1,3"
    assert load_detector("grid").detect(_Img()) == GridDetector((1, 2, 3)).detect(_Img())


def test_bad_detector_specs(tmp_path):
    with pytest.raises(ConfigError, match="unknown detector"):
        load_detector("sam")
    with pytest.raises(ConfigError, match="grid"):
        load_detector("grid:a,b")
    with pytest.raises(EmbedkdError, match="not found"):
        load_detector(f"yolo:{tmp_path / 'missing.pt'}")
    weights = tmp_path / "yolo.pt"
    weights.write_bytes(b"not really weights")
    try:
        import ultralytics  # noqa: F401
    except ImportError:
        with pytest.raises(EmbedkdError, match="ultralytics"):
            load_detector(f"yolo:{weights}")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from embedkd.methods.dclip.student import load_clip

    return load_clip(str(make_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")))


def test_region_features_are_cached_by_content_model_and_box(tmp_path, tiny_clip, monkeypatch):
    from embedkd.methods.dclip.clip_features import image_embeddings
    from embedkd.methods.dclip.data import load_image

    model, processor = tiny_clip
    images = [make_image(tmp_path / f"{c}.jpg", rgb, "square") for c, rgb in COLORS.items()]
    cache = tmp_path / "cache"
    first = encode_regions(model, processor, images, GridDetector((1, 2)), model_name="tiny", cache_dir=cache)
    assert [f.shape for f in first] == [(5, 16)] * len(images)
    whole = image_embeddings(model, processor, [load_image(p) for p in images])
    np.testing.assert_allclose(np.stack([f[0] for f in first]), whole, rtol=1e-5, atol=1e-6)

    def fail(*args, **kwargs):
        raise AssertionError("a cached crop was encoded again")

    monkeypatch.setattr(_CropEncoder, "encode", fail)
    copy = shutil.copy(images[0], tmp_path / "same-content-other-name.jpg")
    again = encode_regions(
        model, processor, [*images, copy], GridDetector((1, 2)), model_name="tiny", cache_dir=cache
    )
    for a, b in zip(first + [first[0]], again):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(AssertionError, match="encoded again"):  # scale 3 boxes are new
        encode_regions(model, processor, images, GridDetector((1, 3)), model_name="tiny", cache_dir=cache)


def test_changed_weights_miss_the_cache_and_corrupt_cache_is_reported(tmp_path, tiny_clip):
    import torch

    model, processor = tiny_clip
    image = make_image(tmp_path / "a.jpg", COLORS["red"], "stripe")
    cache = tmp_path / "cache"
    before = encode_regions(model, processor, [image], GridDetector((1,)), model_name="tiny", cache_dir=cache)
    with torch.no_grad():
        model.visual_projection.weight.mul_(2.0)
    try:
        after = encode_regions(
            model, processor, [image], GridDetector((1,)), model_name="tiny", cache_dir=cache
        )
    finally:
        with torch.no_grad():
            model.visual_projection.weight.div_(2.0)
    np.testing.assert_allclose(after[0], 2 * before[0], rtol=1e-5, atol=1e-6)
    vecs = next(cache.rglob("chunk-*.vecs.npy"))
    vecs.write_bytes(vecs.read_bytes()[:-8])
    with pytest.raises(CacheError, match="checksum"):
        encode_regions(model, processor, [image], GridDetector((1,)), model_name="tiny", cache_dir=cache)
