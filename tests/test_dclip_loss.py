"""DCLIP losses on hand-made tensors (exact values)."""

from __future__ import annotations

import math

import pytest
import torch

from embedkd.methods.dclip.loss import DCLIPLoss, SymmetricInfoNCELoss, symmetric_infonce


def _ce(logits: list[float], target: int) -> float:
    return -logits[target] + math.log(sum(math.exp(v) for v in logits))


def test_infonce_value_on_hand_made_pairs():
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[2.0, 0.0], [3.0, 0.0]])  # both texts point along x: S = [[1, 1], [0, 0]]
    got = SymmetricInfoNCELoss(temperature=0.05)(img, txt).item()
    rows = (_ce([20, 20], 0) + _ce([0, 0], 1)) / 2
    cols = (_ce([20, 0], 0) + _ce([20, 0], 1)) / 2
    assert got == pytest.approx(0.5 * (rows + cols), rel=1e-5)


def test_infonce_perfect_alignment_is_near_zero_and_groups_mask_duplicates():
    eye = torch.eye(3)
    assert SymmetricInfoNCELoss(0.05)(eye, eye).item() == pytest.approx(
        math.log(1 + 2 * math.exp(-20)), abs=1e-7
    )
    same = torch.ones(2, 2)  # two captions of one image: without groups they are each other's negatives
    assert symmetric_infonce(same / 0.05).item() == pytest.approx(math.log(2), rel=1e-6)
    assert symmetric_infonce(same / 0.05, torch.tensor([7, 7])).item() == pytest.approx(0.0, abs=1e-7)


def test_hybrid_loss_adds_both_cosine_terms():
    s_img, s_txt = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
    t_img, t_txt = torch.tensor([[0.0, 5.0]]), torch.tensor([[2.0, 0.0]])
    loss = DCLIPLoss(temperature=0.05)
    parts = loss.components(s_img, s_txt, t_img, t_txt)
    assert parts["image_cos"].item() == pytest.approx(1.0)
    assert parts["text_cos"].item() == pytest.approx(1 - 1 / math.sqrt(2))
    assert parts["contrastive"].item() == pytest.approx(0.0, abs=1e-7)  # a batch of one has no negative
    assert loss(s_img, s_txt, t_img, t_txt).item() == pytest.approx(2 - 1 / math.sqrt(2))
    half = DCLIPLoss(0.05, distill_weight=0.5)(s_img, s_txt, t_img, t_txt).item()
    assert half == pytest.approx(0.5 * (2 - 1 / math.sqrt(2)))


def test_control_needs_no_teacher_and_hybrid_does():
    x = torch.randn(4, 8)
    control = DCLIPLoss(0.05, distill_weight=0.0)
    assert control(x, x).item() == pytest.approx(SymmetricInfoNCELoss(0.05)(x, x).item())
    with pytest.raises(ValueError, match="teacher"):
        DCLIPLoss(0.05)(x, x)
    with pytest.raises(ValueError, match="temperature"):
        SymmetricInfoNCELoss(0.0)
