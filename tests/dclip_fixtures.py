"""Helpers for the DCLIP tests: tiny image–caption folders and a tiny CLIP built from config."""

from __future__ import annotations

from pathlib import Path

COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220), "white": (240, 240, 240)}
SHAPES = ["square", "stripe"]


def make_image(path: Path, color: tuple[int, int, int], shape: str, size=(40, 30)) -> Path:
    """A small RGB JPEG: a coloured square or stripe on grey."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", size, (128, 128, 128))
    draw = ImageDraw.Draw(img)
    w, h = size
    draw.rectangle((5, 5, w // 2, h // 2) if shape == "square" else (0, h // 3, w, 2 * h // 3), fill=color)
    img.save(path, "JPEG")
    return path


def make_flickr_folder(root: Path, n_captions: int = 2) -> Path:
    """A Flickr8k-style folder: ``captions.txt`` (CSV) + ``images/`` with 8 coloured images."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["image,caption"]
    for name, rgb in COLORS.items():
        for shape in SHAPES:
            file = f"{name}_{shape}.jpg"
            make_image(root / "images" / file, rgb, shape)
            for k in range(n_captions):
                lines.append(f"{file},a {name} {shape} on grey {'background' if k else 'paper'} .")
    (root / "captions.txt").write_text("\n".join(lines) + "\n")
    return root


def make_tiny_clip(path: Path, texts: list[str] | None = None, seed: int = 0) -> Path:
    """A tiny randomly initialised CLIP (32 px, hidden 32, 1 layer) with a BPE tokenizer."""
    from embedkd.methods.dclip.student import SmallClipConfig, build_small_clip

    texts = texts or [f"a {c} {s} on grey background ." for c in COLORS for s in SHAPES] * 5
    config = SmallClipConfig(
        image_size=32, patch_size=8, hidden=32, layers=1, heads=2, projection_dim=16, vocab_size=320
    )
    return build_small_clip(path, texts, config, seed=seed)
