"""Length-grouped batch sampler: every text once per epoch, similar lengths together, reproducible."""

from __future__ import annotations

import random

from datasets import Dataset

from embedkd.methods.leaf.sampling import LengthGroupedBatchSampler


def _dataset(n: int = 1000) -> Dataset:
    rng = random.Random(0)
    texts = [" ".join(["w"] * rng.randint(1, 60)) + f" {i}" for i in range(n)]
    return Dataset.from_dict({"text": texts, "label": [float(i) for i in range(n)]})


def _padding(batches, lengths) -> float:
    """Fraction of batch slots that would be padding when padding to each batch's longest text."""
    used = sum(sum(lengths[i] for i in b) for b in batches)
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - used / total


def test_each_text_once_per_epoch_and_len_matches():
    ds = _dataset(1003)
    sampler = LengthGroupedBatchSampler(ds, batch_size=32, drop_last=False, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 32
    assert sorted(i for b in batches for i in b) == list(range(1003))
    dropped = LengthGroupedBatchSampler(ds, batch_size=32, drop_last=True, seed=3)
    assert len(list(dropped)) == len(dropped) == 31
    assert all(len(b) == 32 for b in dropped)


def test_batches_waste_far_less_padding_than_random_ones():
    ds = _dataset()
    lengths = [len(t) for t in ds["text"]]
    grouped = list(LengthGroupedBatchSampler(ds, batch_size=32, drop_last=False, seed=0))
    order = list(range(len(ds)))
    random.Random(0).shuffle(order)
    plain = [order[i : i + 32] for i in range(0, len(order), 32)]
    assert _padding(grouped, lengths) < 0.1 < 0.3 < _padding(plain, lengths)


def test_reproducible_per_epoch_and_different_across_epochs():
    ds = _dataset()
    a = LengthGroupedBatchSampler(ds, batch_size=16, drop_last=False, seed=7)
    b = LengthGroupedBatchSampler(ds, batch_size=16, drop_last=False, seed=7)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    # batches arrive in random order, not sorted by length
    lengths = [max(len(ds["text"][i]) for i in batch) for batch in first]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
