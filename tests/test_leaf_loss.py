"""The ranking-aware LEAF loss and the held-out top-10 overlap signal."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import embedkd
from embedkd.fidelity import bank_overlap
from embedkd.methods.leaf.loss import RankDistillLoss


class Fixed(torch.nn.Module):
    """A "student" that returns given vectors, so the loss can be checked by hand."""

    def __init__(self, vectors: torch.Tensor) -> None:
        super().__init__()
        self.vectors = vectors

    def forward(self, features):
        return {"sentence_embedding": self.vectors}


def _loss(student: torch.Tensor, teacher: torch.Tensor, bank: np.ndarray, **weights) -> float:
    return float(RankDistillLoss(Fixed(student), bank, **weights)([{}], teacher))


def test_loss_is_zero_when_the_student_is_the_teacher():
    rng = np.random.default_rng(0)
    teacher = torch.tensor(rng.normal(size=(4, 8)), dtype=torch.float32)
    bank = rng.normal(size=(16, 8))
    assert _loss(teacher.clone(), teacher, bank, kl_weight=1.0, cosine_weight=1.0) == pytest.approx(
        0, abs=1e-6
    )


def _kl_by_hand(student: np.ndarray, teacher: np.ndarray, bank: np.ndarray, tau: float = 0.05) -> float:
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    candidates = np.vstack([unit(bank), unit(teacher)])  # the batch's own targets join the bank

    def log_softmax(scores):
        scores = scores - scores.max()
        return scores - np.log(np.exp(scores).sum())

    log_s = log_softmax(unit(student)[0] @ candidates.T / tau)
    log_t = log_softmax(unit(teacher)[0] @ candidates.T / tau)
    return float((np.exp(log_t) * (log_t - log_s)).sum())


def test_kl_term_is_the_divergence_of_the_bank_rankings():
    bank = np.eye(4)
    teacher = np.array([[1.0, 0.9, 0.0, 0.0]])
    swapped = np.array([[0.9, 1.0, 0.0, 0.0]])  # same norm, first two neighbours swapped
    t, s = torch.tensor(teacher, dtype=torch.float32), torch.tensor(swapped, dtype=torch.float32)
    mse_only = _loss(s, t, bank, kl_weight=0.0)
    assert mse_only == pytest.approx(0.005, rel=1e-4)  # (0.1^2 + 0.1^2) / 4
    expected_kl = _kl_by_hand(swapped, teacher, bank)
    assert expected_kl > 0.005
    assert _loss(s, t, bank, kl_weight=2.0) == pytest.approx(mse_only + 2 * expected_kl, rel=1e-3)


def test_cosine_term_adds_one_minus_cosine():
    teacher = torch.tensor([[1.0, 0.0]])
    student = torch.tensor([[0.0, 1.0]])
    plain = _loss(student, teacher, np.eye(2), kl_weight=0.0)
    assert _loss(student, teacher, np.eye(2), kl_weight=0.0, cosine_weight=2.0) == pytest.approx(plain + 2.0)


def test_bank_overlap_counts_shared_neighbours():
    bank = np.eye(3)
    teacher = np.array([[1.0, 0.5, 0.0]])
    assert bank_overlap(teacher, teacher, bank, k=2) == 1.0
    assert bank_overlap(np.array([[0.0, 0.4, 1.0]]), teacher, bank, k=2) == 0.5


def test_ranking_recipe_trains_and_reports_the_overlap(tiny_st_factory, tmp_path):
    data = tmp_path / "texts.txt"
    data.write_text(
        "\n".join(f"text {i} about subject {i % 11} and thing {i * 7 % 13}" for i in range(200)) + "\n"
    )
    out = embedkd.distill(
        teacher=tiny_st_factory(hidden=48, layers=2, seed=1),
        student="teacher",
        student_num_layers=1,
        data=data,
        output=tmp_path / "out",
        kl_weight=1.0,
        cosine_weight=0.5,
        bank_size=64,
        heldout=20,
        batch_size=16,
        max_steps=3,
        cache_dir=tmp_path / "cache",
    )
    report = json.loads((out / "embedkd_fidelity.json").read_text())
    assert 0.0 <= report["heldout_top10_overlap"] <= 1.0
    assert report["config"]["kl_weight"] == 1.0 and report["config"]["bank_size"] == 64


def test_ranking_terms_and_matryoshka_do_not_mix(tmp_path):
    with pytest.raises(embedkd.EmbedkdError, match="matryoshka"):
        embedkd.distill(output=str(tmp_path), kl_weight=1.0, matryoshka_dims=[128])


def test_bank_file_replaces_the_training_text_bank(tiny_st_factory, tmp_path, monkeypatch):
    import embedkd.methods.leaf.loss as loss_module

    seen = []
    original = loss_module.RankDistillLoss.__init__

    def spy(self, model, bank, **kwargs):
        seen.append(np.asarray(bank))
        original(self, model, bank, **kwargs)

    monkeypatch.setattr(loss_module.RankDistillLoss, "__init__", spy)
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(f"text {i} about subject {i % 11}" for i in range(120)) + "\n")
    bank = np.random.default_rng(0).normal(size=(37, 48)).astype(np.float32)
    np.save(tmp_path / "bank.npy", bank)
    teacher = tiny_st_factory(hidden=48, layers=2, seed=1)
    common = dict(teacher=teacher, student="teacher", student_num_layers=1, data=data, kl_weight=1.0,
                  heldout=20, batch_size=16, max_steps=2, cache_dir=tmp_path / "cache")  # fmt: skip
    embedkd.distill(output=tmp_path / "out", bank_file=str(tmp_path / "bank.npy"), **common)
    assert len(seen) == 1 and np.array_equal(seen[0], bank)
    np.save(tmp_path / "wrong.npy", bank[:, :40])
    with pytest.raises(embedkd.EmbedkdError, match=r"wrong.npy holds \(37, 40\).*\(n, 48\)"):
        embedkd.distill(output=tmp_path / "out2", bank_file=str(tmp_path / "wrong.npy"), **common)


def test_bank_file_needs_a_ranking_term_and_an_existing_file(tmp_path):
    np.save(tmp_path / "bank.npy", np.zeros((2, 4), dtype=np.float32))
    with pytest.raises(embedkd.EmbedkdError, match="--bank-file .*bank.npy is used by the ranking term"):
        embedkd.distill(output=str(tmp_path / "o"), bank_file=str(tmp_path / "bank.npy"))
    with pytest.raises(embedkd.EmbedkdError, match="--bank-file .*missing.npy does not exist"):
        embedkd.distill(output=str(tmp_path / "o"), kl_weight=1.0, bank_file=str(tmp_path / "missing.npy"))
