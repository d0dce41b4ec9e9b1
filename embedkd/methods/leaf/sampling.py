"""Length-grouped batches: texts of similar length share a batch, so little compute goes to padding.

Distillation texts vary a lot in length (two-word keyword queries next to 60-word sentences). A
random batch pads every text to its longest member; on the shipped distillation corpus that made
training ~2x slower than necessary. This sampler keeps the randomness that SGD needs — each epoch
shuffles all texts, cuts the shuffled order into mega-batches of ``MEGA_BATCHES`` batches, sorts
inside each mega-batch by length and shuffles the order of the resulting batches — the same scheme as
``transformers``' ``LengthGroupedSampler``, packaged as a sentence-transformers batch sampler.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from sentence_transformers.base.sampler import DefaultBatchSampler

MEGA_BATCHES = 50


class LengthGroupedBatchSampler(DefaultBatchSampler):
    """Random batches of similar-length texts (see the module docstring).

    Args:
        dataset: a ``datasets.Dataset`` whose first string column holds the texts.
        batch_size: texts per batch.
        drop_last: drop the last, smaller batch of each mega-batch chain.
        valid_label_columns: unused (kept for the sentence-transformers sampler signature).
        generator: unused; shuffling is seeded from ``seed`` and the epoch for reproducibility.
        seed: base seed; epoch ``e`` shuffles with ``seed + e``.
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        drop_last: bool,
        valid_label_columns: list[str] | None = None,
        generator: torch.Generator | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            dataset,
            batch_size=batch_size,
            drop_last=drop_last,
            valid_label_columns=valid_label_columns,
            generator=generator,
            seed=seed,
        )
        column = next(name for name, feature in dataset.features.items() if feature.dtype == "string")
        self.lengths = torch.tensor([len(text) for text in dataset[column]], dtype=torch.long)

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator()
        g.manual_seed(int(self.seed) + int(self.epoch))
        order = torch.randperm(len(self.lengths), generator=g)
        mega = self.batch_size * MEGA_BATCHES
        batches: list[list[int]] = []
        for start in range(0, len(order), mega):
            chunk = order[start : start + mega]
            chunk = chunk[torch.argsort(self.lengths[chunk], descending=True, stable=True)]
            batches.extend(
                chunk[i : i + self.batch_size].tolist() for i in range(0, len(chunk), self.batch_size)
            )
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.batch_size]
        for i in torch.randperm(len(batches), generator=g).tolist():
            yield batches[i]
