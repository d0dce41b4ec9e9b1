"""Text augmentation for distillation: new inputs for the teacher to label, derived from the training texts.

A student that regresses onto a teacher learns the teacher's *function*; with few texts it fits those
texts and generalises less well. Labelling perturbed copies with the same teacher (as in TinyBERT's
augmentation) shows the student more of the teacher's input space for the price of teacher encoding
only. Every augmented text is derived from training texts alone, so held-out texts stay unseen.

Three perturbations, drawn uniformly per new text:

* ``concat``: the text followed by another random training text (longer, multi-topic inputs);
* ``crop``: a contiguous span of 50-90% of the words (texts of 4+ words);
* ``drop``: each word dropped with probability 0.15, at least one kept (texts of 3+ words).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from embedkd.errors import ConfigError

OPS = ("concat", "crop", "drop")


def _crop(words: list[str], rng: random.Random) -> list[str]:
    n = max(1, round(len(words) * rng.uniform(0.5, 0.9)))
    start = rng.randrange(len(words) - n + 1)
    return words[start : start + n]


def _drop(words: list[str], rng: random.Random) -> list[str]:
    kept = [w for w in words if rng.random() >= 0.15]
    return kept or [rng.choice(words)]


def augment_texts(texts: Sequence[str], per_text: int, seed: int = 0) -> list[str]:
    """``per_text`` perturbed variants of every text, without duplicates of the inputs or each other.

    Args:
        texts: training texts (never held-out ones).
        per_text: new texts to derive from each input text (0 returns an empty list).
        seed: random seed; the same inputs and seed give the same list.

    Returns:
        Up to ``len(texts) * per_text`` new texts (fewer when perturbations collide).

    Raises:
        ConfigError: ``per_text`` is negative.
    """
    if per_text < 0:
        raise ConfigError(f"--augment must be >= 0 new texts per training text, got {per_text}")
    if per_text == 0 or not texts:
        return []
    rng = random.Random(seed)
    seen = set(texts)
    out: list[str] = []
    for text in texts:
        words = text.split()
        for _ in range(per_text):
            op = rng.choice(OPS)
            if op == "crop" and len(words) >= 4:
                new = " ".join(_crop(words, rng))
            elif op == "drop" and len(words) >= 3:
                new = " ".join(_drop(words, rng))
            else:
                new = f"{text} {texts[rng.randrange(len(texts))]}"
            if new not in seen:
                seen.add(new)
                out.append(new)
    return out
