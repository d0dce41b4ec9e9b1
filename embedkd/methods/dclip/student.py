"""CLIP models for DCLIP: load any CLIP checkpoint, or build a small one from config offline.

``load_clip`` takes what every embedkd model argument takes (a local directory, an offline-package id
or a Hugging Face id) and refuses checkpoints that lack a tower (an image-only ``CLIPVisionModel``, a
text-only SentenceTransformer) with one clear error.

No CLIP weights exist offline here, so ``build_small_clip`` writes a randomly initialised
``CLIPModel`` with small towers and a ``CLIPProcessor`` whose ``CLIPTokenizer`` is a byte-level BPE
trained on the given texts (the same normalisation and pre-tokenisation as OpenAI CLIP's tokenizer).
The directory it writes loads with plain ``CLIPModel.from_pretrained`` / ``CLIPProcessor.from_pretrained``,
exactly like a real checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from embedkd.errors import ConfigError, EmbedkdError
from embedkd.hub import resolve_model

logger = logging.getLogger(__name__)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# OpenAI CLIP's pre-tokenisation pattern (as in transformers' CLIPTokenizer).
CLIP_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


@dataclass(frozen=True)
class SmallClipConfig:
    """Sizes of a small CLIP built from config (both towers share ``hidden`` and ``layers``)."""

    image_size: int = 64
    patch_size: int = 8
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    projection_dim: int = 64
    vocab_size: int = 2000
    max_text_length: int = 32

    def __post_init__(self) -> None:
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}"
            )
        if self.hidden % self.heads:
            raise ConfigError(f"hidden {self.hidden} is not a multiple of heads {self.heads}")
        if self.vocab_size < 300:
            raise ConfigError(f"vocab_size {self.vocab_size} is too small for a byte-level BPE (>= 300)")


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """Train a byte-level BPE on ``texts`` and wrap it as a ``transformers`` ``CLIPTokenizer``."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", continuing_subword_prefix="", unk_token=EOS))
    bpe.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    model = json.loads(bpe.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return CLIPTokenizer(vocab=model["vocab"], merges=merges)


def build_small_clip(
    output: str | Path, texts: Iterable[str], config: SmallClipConfig | None = None, *, seed: int = 0
) -> Path:
    """Write a randomly initialised small ``CLIPModel`` + ``CLIPProcessor`` to ``output``.

    Args:
        output: directory to write (a CLIP checkpoint directory).
        texts: texts to train the BPE tokenizer on (use training captions only).
        config: tower sizes.
        seed: torch seed of the initialisation.
    """
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    config = config or SmallClipConfig()
    tokenizer = train_clip_tokenizer(texts, config.vocab_size)
    tokenizer.model_max_length = config.max_text_length
    tower = dict(
        hidden_size=config.hidden,
        intermediate_size=config.hidden * 4,
        num_hidden_layers=config.layers,
        num_attention_heads=config.heads,
    )
    clip_config = CLIPConfig(
        text_config=dict(
            tower,
            vocab_size=len(tokenizer),
            max_position_embeddings=config.max_text_length,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(tower, image_size=config.image_size, patch_size=config.patch_size),
        projection_dim=config.projection_dim,
    )
    torch.manual_seed(seed)
    model = CLIPModel(clip_config)
    processor = CLIPProcessor(image_processor=_image_processor(config.image_size), tokenizer=tokenizer)
    output = Path(output)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    logger.info("built a small CLIP (%d params) at %s", sum(p.numel() for p in model.parameters()), output)
    return output


def _image_processor(size: int):
    try:  # the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as cls
    except ImportError:  # pragma: no cover - older transformers
        from transformers import CLIPImageProcessor as cls
    return cls(size={"shortest_edge": size}, crop_size={"height": size, "width": size})


def check_clip_checkpoint(path: str) -> None:
    """Raise :class:`EmbedkdError` unless ``path`` is a CLIP checkpoint with both towers."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        return  # a hub id: transformers reports its own errors
    try:
        config = json.loads(config_file.read_text())
    except ValueError as exc:
        raise EmbedkdError(f"{config_file} is not valid JSON: {exc}") from exc
    model_type = config.get("model_type")
    if model_type in ("clip_vision_model", "clip_text_model") or (
        model_type == "clip" and not {"text_config", "vision_config"} <= set(config)
    ):
        kind = "image-only" if "vision" in str(model_type) else "text-only"
        raise EmbedkdError(
            f"checkpoint {path} is {kind} (model_type {model_type!r}); DCLIP needs a CLIP model with both "
            "an image and a text tower (model_type 'clip')"
        )
    if model_type != "clip":
        raise EmbedkdError(
            f"checkpoint {path} is not a CLIP model (model_type {model_type!r}); DCLIP needs a CLIPModel "
            "checkpoint with image and text towers"
        )


def load_clip(name: str):
    """Load ``(CLIPModel, CLIPProcessor)`` from a local dir, offline-package id or Hugging Face id."""
    from transformers import CLIPModel, CLIPProcessor

    path = resolve_model(name)
    check_clip_checkpoint(path)
    try:
        processor = CLIPProcessor.from_pretrained(path)
    except (OSError, ValueError, TypeError) as exc:
        raise EmbedkdError(f"checkpoint {name} has no usable CLIP processor/tokenizer: {exc}") from exc
    model = CLIPModel.from_pretrained(path)
    model.eval()
    return model, processor
