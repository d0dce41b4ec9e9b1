"""Image–caption data: Flickr8k-style ``captions.txt`` and COCO-style JSON folders, loaded with PIL.

Two layouts are read:

* **Flickr8k**: a folder with ``captions.txt`` (CSV ``image,caption`` with a header, or the original
  ``Flickr8k.token.txt`` lines ``name.jpg#0<TAB>caption``) and the images in ``images/`` (or ``Images/``,
  or next to the caption file);
* **COCO**: a JSON file (or a folder holding exactly one ``*.json``) with ``images`` (``id``,
  ``file_name``) and ``annotations`` (``image_id``, ``caption``); images in ``images/`` next to it (or
  next to the file).

Every caption must name an image that exists, and every image must be readable: both are checked up
front and reported as one :class:`~embedkd.errors.EmbedkdError` naming the files.

Example::

    pairs = load_image_captions("../shared/data/flickr8k-1k")
    train, test = split_by_image(pairs, test_images=200, seed=0)
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from embedkd.errors import EmbedkdError

IMAGE_DIR_NAMES = ("images", "Images", "Flicker8k_Dataset", "Flickr8k_Dataset")


@dataclass(frozen=True)
class ImageCaption:
    """One (image, caption) pair."""

    image: Path
    caption: str


def load_image_captions(
    path: str | Path, *, max_samples: int | None = None, check_images: bool = True
) -> list[ImageCaption]:
    """Read the (image, caption) pairs of a Flickr8k-style folder or a COCO-style JSON.

    Args:
        path: folder with ``captions.txt`` / one ``*.json``, or the caption file itself.
        max_samples: keep only the first this many pairs (in file order).
        check_images: open every image once with PIL so that unreadable files fail here, not mid-training.

    Raises:
        EmbedkdError: no caption file, empty captions, captions naming missing images, unreadable images.
    """
    caption_file = _find_caption_file(Path(path))
    if caption_file.suffix.lower() == ".json":
        named = _read_coco(caption_file)
    else:
        named = _read_flickr(caption_file)
    if not named:
        raise EmbedkdError(f"caption file {caption_file} holds no captions")
    if max_samples is not None:
        named = named[:max_samples]
    image_dir = _image_dir(caption_file)
    missing = sorted({name for name, _ in named if not (image_dir / name).is_file()})
    if missing:
        shown = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
        raise EmbedkdError(f"{caption_file} names {len(missing)} image(s) missing from {image_dir}: {shown}")
    pairs = [ImageCaption(image_dir / name, caption) for name, caption in named]
    if check_images:
        for image in dict.fromkeys(p.image for p in pairs):
            load_image(image).close()
    return pairs


def _find_caption_file(path: Path) -> Path:
    if path.is_file():
        return path
    if not path.is_dir():
        raise EmbedkdError(f"image-caption data {path} does not exist")
    for name in ("captions.txt", "Flickr8k.token.txt", "captions.csv"):
        if (path / name).is_file():
            return path / name
    jsons = sorted(path.glob("*.json"))
    if len(jsons) == 1:
        return jsons[0]
    raise EmbedkdError(
        f"{path} holds no captions.txt and not exactly one COCO-style *.json "
        f"(found {len(jsons)} json files); pass the caption file itself"
    )


def _image_dir(caption_file: Path) -> Path:
    for name in IMAGE_DIR_NAMES:
        if (caption_file.parent / name).is_dir():
            return caption_file.parent / name
    return caption_file.parent


def _read_flickr(path: Path) -> list[tuple[str, str]]:
    text = _read_text(path)
    lines = text.splitlines()
    if lines and "\t" in lines[0] and "#" in lines[0].split("\t", 1)[0]:
        rows = [line.split("\t", 1) for line in lines if line.strip()]
        return [(name.split("#", 1)[0].strip(), caption.strip()) for name, caption in rows]
    reader = csv.DictReader(lines)
    if reader.fieldnames is None or not {"image", "caption"} <= set(reader.fieldnames):
        raise EmbedkdError(
            f"{path} is not a Flickr8k caption file: expected a CSV header 'image,caption' "
            f"or 'name.jpg#0<TAB>caption' lines, found {lines[0][:80]!r}"
            if lines
            else f"{path} is empty"
        )
    return [(row["image"].strip(), (row["caption"] or "").strip()) for row in reader if row["image"]]


def _read_coco(path: Path) -> list[tuple[str, str]]:
    try:
        data = json.loads(_read_text(path))
        files = {img["id"]: img["file_name"] for img in data["images"]}
        annotations = data["annotations"]
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbedkdError(
            f"{path} is not COCO-style caption JSON (needs 'images' with id/file_name and "
            f"'annotations' with image_id/caption): {exc}"
        ) from exc
    pairs = []
    for ann in annotations:
        if ann.get("image_id") not in files:
            raise EmbedkdError(
                f"{path}: annotation names image_id {ann.get('image_id')!r} absent from 'images'"
            )
        pairs.append((files[ann["image_id"]], str(ann.get("caption", "")).strip()))
    return pairs


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise EmbedkdError(f"{path} is not UTF-8 text ({exc})") from exc


def load_image(path: str | Path):
    """Open ``path`` with PIL as an RGB image.

    Raises:
        EmbedkdError: the file is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise EmbedkdError(f"cannot read image {path}: {exc}") from exc


def image_sha256(path: str | Path) -> str:
    """Hex sha256 of an image file's bytes (the identity of its content)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def unique_images(pairs: Sequence[ImageCaption]) -> list[Path]:
    """The distinct images of ``pairs`` in first-seen order."""
    return list(dict.fromkeys(p.image for p in pairs))


def split_by_image(
    pairs: Sequence[ImageCaption], *, test_images: int | float, seed: int = 0
) -> tuple[list[ImageCaption], list[ImageCaption]]:
    """Split pairs into train/test so that no image is in both.

    Args:
        pairs: the pairs to split.
        test_images: number of test images (int) or their fraction (float in (0, 1)).
        seed: seed of the image shuffle (the split is a pure function of the images and the seed).
    """
    images = sorted(unique_images(pairs), key=lambda p: p.name)
    n_test = round(len(images) * test_images) if isinstance(test_images, float) else int(test_images)
    if not 0 < n_test < len(images):
        raise EmbedkdError(
            f"test_images={test_images!r} leaves no train or no test image ({len(images)} images)"
        )
    random.Random(seed).shuffle(images)
    test = set(images[:n_test])
    return [p for p in pairs if p.image not in test], [p for p in pairs if p.image in test]
