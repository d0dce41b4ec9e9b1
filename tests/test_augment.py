"""Teacher-labelled augmentation: derived only from training texts, deterministic, validated."""

from __future__ import annotations

import pytest

from embedkd.errors import ConfigError
from embedkd.methods.leaf.augment import augment_texts

TEXTS = [
    "what is the capital city of france",
    "a man rides a red bicycle down the hill",
    "how many moons does jupiter have today",
    "ok",
]


def test_variants_come_from_the_training_words_only():
    out = augment_texts(TEXTS, per_text=5, seed=1)
    vocab = {w for t in TEXTS for w in t.split()}
    assert 0 < len(out) <= 5 * len(TEXTS)
    assert not set(out) & set(TEXTS) and len(set(out)) == len(out)
    assert all(set(t.split()) <= vocab for t in out)
    lengths = {len(t.split()) for t in out}
    assert min(lengths) < 8 and max(lengths) > 8  # crops/drops shorten, concatenations lengthen


def test_short_texts_are_only_concatenated():
    out = augment_texts(["ok", "fine"], per_text=3, seed=0)
    assert out and all(len(t.split()) == 2 for t in out)


def test_seeded_and_off_by_default():
    assert augment_texts(TEXTS, 3, seed=7) == augment_texts(TEXTS, 3, seed=7)
    assert augment_texts(TEXTS, 3, seed=7) != augment_texts(TEXTS, 3, seed=8)
    assert augment_texts(TEXTS, 0) == [] and augment_texts([], 3) == []


def test_negative_count_names_the_value():
    with pytest.raises(ConfigError, match="--augment must be >= 0.*-1"):
        augment_texts(TEXTS, -1)
