"""Image–caption readers (Flickr8k CSV / token file, COCO JSON), splits, retrieval metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dclip_fixtures import COLORS, make_flickr_folder, make_image

from embedkd.errors import EmbedkdError
from embedkd.methods.dclip.data import load_image_captions, split_by_image, unique_images
from embedkd.methods.dclip.metrics import keyword_labels, retrieval_metrics


def test_flickr_csv_and_token_formats(tmp_path):
    folder = make_flickr_folder(tmp_path / "f")
    pairs = load_image_captions(folder)
    assert len(pairs) == 16 and len(unique_images(pairs)) == 8
    assert pairs[0].image == folder / "images" / "red_square.jpg"
    assert pairs[0].caption == "a red square on grey paper ."
    token = tmp_path / "f" / "Flickr8k.token.txt"
    token.write_text("red_square.jpg#0\tA red square .\nred_square.jpg#1\tSomething red .\n")
    assert [p.caption for p in load_image_captions(token)] == ["A red square .", "Something red ."]
    assert len(load_image_captions(folder, max_samples=3)) == 3


def test_coco_json(tmp_path):
    (tmp_path / "images").mkdir()
    make_image(tmp_path / "images" / "000001.jpg", COLORS["blue"], "square")
    data = {
        "images": [{"id": 1, "file_name": "000001.jpg"}],
        "annotations": [{"image_id": 1, "caption": " a blue square "}, {"image_id": 1, "caption": "blue"}],
    }
    (tmp_path / "captions_train.json").write_text(json.dumps(data))
    pairs = load_image_captions(tmp_path)
    assert [(p.image.name, p.caption) for p in pairs] == [
        ("000001.jpg", "a blue square"),
        ("000001.jpg", "blue"),
    ]
    data["annotations"].append({"image_id": 9, "caption": "orphan"})
    (tmp_path / "captions_train.json").write_text(json.dumps(data))
    with pytest.raises(EmbedkdError, match="image_id 9"):
        load_image_captions(tmp_path)


def test_missing_and_unreadable_images_are_named(tmp_path):
    folder = make_flickr_folder(tmp_path / "f")
    with (folder / "captions.txt").open("a") as f:
        f.write("gone.jpg,a caption for nothing .\n")
    with pytest.raises(EmbedkdError, match=r"names 1 image\(s\) missing .*gone\.jpg"):
        load_image_captions(folder)
    folder2 = make_flickr_folder(tmp_path / "g")
    (folder2 / "images" / "red_square.jpg").write_bytes(b"\x00not a jpeg")
    with pytest.raises(EmbedkdError, match="cannot read image .*red_square.jpg"):
        load_image_captions(folder2)
    (folder2 / "captions.txt").write_text("file,text\nx.jpg,y\n")
    with pytest.raises(EmbedkdError, match="image,caption"):
        load_image_captions(folder2)
    with pytest.raises(EmbedkdError, match="does not exist"):
        load_image_captions(tmp_path / "nope")


def test_split_is_by_image_and_deterministic(tmp_path):
    pairs = load_image_captions(make_flickr_folder(tmp_path / "f"))
    train, test = split_by_image(pairs, test_images=3, seed=0)
    assert len({p.image for p in test}) == 3 and len(train) + len(test) == len(pairs)
    assert not {p.image for p in train} & {p.image for p in test}
    assert split_by_image(pairs, test_images=3, seed=0) == (train, test)
    assert len({p.image for p in split_by_image(pairs, test_images=0.25, seed=1)[1]}) == 2
    with pytest.raises(EmbedkdError, match="test_images"):
        split_by_image(pairs, test_images=8)


def test_retrieval_metrics_exact_values():
    # 2 images, 4 captions: captions 0,1 -> image 0; captions 2,3 -> image 1
    scores = np.array([[0.9, 0.1, 0.8, 0.0], [0.2, 0.5, 0.3, 0.4]])
    m = retrieval_metrics(scores, [0, 0, 1, 1])
    # t2i ranks: c0 -> img0 first; c1 -> img1 wins (0.5>0.1): rank 2; c2 -> img0 wins: rank 2; c3 -> img1 first
    assert m["t2i_r1"] == 50.0 and m["t2i_r5"] == 100.0
    assert m["t2i_map"] == pytest.approx(100 * (1 + 0.5 + 0.5 + 1) / 4)
    # i2t: img0 ranks c0, c2, c1, c3 -> hits at 1 and 3: AP = (1 + 2/3)/2; img1 ranks c1, c3, c2, c0 -> hits 2, 3
    assert m["i2t_r1"] == 50.0 and m["i2t_r5"] == 100.0
    ap0, ap1 = (1 + 2 / 3) / 2, (1 / 2 + 2 / 3) / 2
    assert m["i2t_map"] == pytest.approx(100 * (ap0 + ap1) / 2, abs=0.01)


def test_keyword_labels(tmp_path):
    pairs = load_image_captions(make_flickr_folder(tmp_path / "f"))
    paths, labels = keyword_labels(pairs, ["red", "blue", "grey"], min_votes=2)
    # red/blue images tie with "grey" (no single winner); green/white ones are only "grey"
    assert [p.name for p in paths] == [
        "green_square.jpg",
        "green_stripe.jpg",
        "white_square.jpg",
        "white_stripe.jpg",
    ]
    assert labels == [2, 2, 2, 2]
    paths, labels = keyword_labels(pairs, ["red", "blue"], min_votes=2)
    assert [p.name for p in paths] == [
        "red_square.jpg",
        "red_stripe.jpg",
        "blue_square.jpg",
        "blue_stripe.jpg",
    ]
    assert labels == [0, 0, 1, 1]
