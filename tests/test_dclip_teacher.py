"""The cross-modal teacher: attention shapes, masking, zero-init, pairwise scoring, save/load."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from embedkd.errors import EmbedkdError
from embedkd.methods.dclip.teacher import CrossAttention, CrossModalTeacher, TeacherConfig, is_teacher_dir

B, R, T, D, H = 3, 5, 6, 16, 4


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    regions, tokens = torch.randn(B, R, D, generator=g), torch.randn(B, T, D, generator=g)
    region_mask = torch.ones(B, R, dtype=torch.bool)
    region_mask[1, 3:] = False
    token_mask = torch.ones(B, T, dtype=torch.bool)
    token_mask[2, 2:] = False
    return regions, region_mask, tokens, token_mask, torch.randn(B, D, generator=g)


def _trained_like(seed: int = 0) -> CrossModalTeacher:
    torch.manual_seed(seed)
    teacher = CrossModalTeacher(TeacherConfig(D, H))
    for layer in (teacher.image_out, teacher.text_out):  # leave the zero init behind
        nn.init.normal_(layer.weight, std=0.3)
    return teacher.eval()


def test_attention_shapes_and_masked_positions_get_no_weight():
    teacher = _trained_like()
    regions, region_mask, tokens, token_mask, text_global = _inputs()
    image, text, attn = teacher.encode_pairs(regions, region_mask, tokens, token_mask, text_global)
    assert image.shape == (B, D) and text.shape == (B, D)
    assert attn["image_to_text"].shape == (B, H, R, T)
    assert attn["text_to_image"].shape == (B, H, T, R)
    assert torch.all(attn["image_to_text"][2, :, :, 2:] == 0)
    assert torch.all(attn["text_to_image"][1, :, :, 3:] == 0)
    torch.testing.assert_close(attn["image_to_text"].sum(-1), torch.ones(B, H, R))


def test_padding_content_does_not_change_the_vectors():
    teacher = _trained_like()
    regions, region_mask, tokens, token_mask, text_global = _inputs()
    first = teacher.encode_pairs(regions, region_mask, tokens, token_mask, text_global)
    regions2, tokens2 = regions.clone(), tokens.clone()
    regions2[1, 3:] = 99.0
    tokens2[2, 2:] = -99.0
    second = teacher.encode_pairs(regions2, region_mask, tokens2, token_mask, text_global)
    torch.testing.assert_close(first[0], second[0])
    torch.testing.assert_close(first[1], second[1])


def test_matches_torch_multihead_attention():
    torch.manual_seed(1)
    ca = CrossAttention(D, H)
    mha = nn.MultiheadAttention(D, H, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([ca.q.weight, ca.k.weight, ca.v.weight]))
        mha.in_proj_bias.copy_(torch.cat([ca.q.bias, ca.k.bias, ca.v.bias]))
        mha.out_proj.weight.copy_(ca.o.weight)
        mha.out_proj.bias.copy_(ca.o.bias)
    regions, region_mask, tokens, _, _ = _inputs()
    out, attn = ca(tokens, torch.ones(B, T, dtype=torch.bool), regions, region_mask)
    ref, ref_attn = mha(tokens, regions, regions, key_padding_mask=~region_mask, average_attn_weights=False)
    torch.testing.assert_close(out, ca.norm(tokens.mean(1) + ref.mean(1)))
    torch.testing.assert_close(attn, ref_attn)


def test_untrained_teacher_is_the_frozen_clip_and_pair_scores_match_paired():
    regions, region_mask, tokens, token_mask, text_global = _inputs()
    fresh = CrossModalTeacher(TeacherConfig(D, H))
    image, text, _ = fresh.encode_pairs(regions, region_mask, tokens, token_mask, text_global)
    torch.testing.assert_close(image, regions[:, 0])
    torch.testing.assert_close(text, text_global)
    teacher = _trained_like()
    with torch.no_grad():
        scores = teacher.pair_scores(regions, region_mask, tokens, token_mask, text_global)
        image, text, _ = teacher.encode_pairs(regions, region_mask, tokens, token_mask, text_global)
    assert scores.shape == (B, B)
    torch.testing.assert_close(scores.diagonal(), nn.functional.cosine_similarity(image, text, dim=-1))
    loss = teacher(regions, region_mask, tokens, token_mask, text_global)["loss"]
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_empty_context_is_a_clear_error():
    regions, region_mask, tokens, token_mask, text_global = _inputs()
    token_mask[0] = False
    with pytest.raises(EmbedkdError, match="no unmasked"):
        _trained_like().encode_pairs(regions, region_mask, tokens, token_mask, text_global)


def test_save_load_round_trip(tmp_path):
    teacher = _trained_like(seed=3)
    teacher.save(tmp_path / "t")
    assert is_teacher_dir(tmp_path / "t") and not is_teacher_dir(tmp_path)
    loaded = CrossModalTeacher.load(tmp_path / "t")
    assert loaded.teacher_config == teacher.teacher_config
    inputs = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(loaded.pair_scores(*inputs), teacher.pair_scores(*inputs))
    with pytest.raises(EmbedkdError, match="not a DCLIP teacher"):
        CrossModalTeacher.load(tmp_path)


def test_validation_selection_keeps_the_best_step_including_the_frozen_clip():
    from embedkd.methods.dclip.features import PairFeatures
    from embedkd.methods.dclip.train import SelectOnValidation, validation_score

    g = torch.Generator().manual_seed(0)
    n = 6
    image = nn.functional.normalize(torch.randn(n, D, generator=g), dim=-1)
    feats = PairFeatures(  # the frozen CLIP is perfect here: caption i's pooled vector is image i's
        images=[f"img{i}" for i in range(n)],
        regions=torch.cat([image[:, None], torch.randn(n, R - 1, D, generator=g)], 1),
        region_mask=torch.ones(n, R, dtype=torch.bool),
        tokens=torch.randn(n, T, D, generator=g),
        token_mask=torch.ones(n, T, dtype=torch.bool),
        text_global=image.clone(),
        image_index=torch.arange(n),
    )
    teacher = CrossModalTeacher(TeacherConfig(D, H))
    select = SelectOnValidation(teacher, feats, every=5)
    select.evaluate(0)
    assert select.history[0][1] == 100.0
    with torch.no_grad():  # a "trained" teacher that scrambles the perfect space
        for layer in (teacher.image_out, teacher.text_out):
            layer.weight.normal_(std=10.0, generator=g)
    select.evaluate(5)
    assert select.history[1][1] < 100.0
    record = select.restore()
    assert record["selected_step"] == 0 and [h["step"] for h in record["history"]] == [0, 5]
    assert torch.all(teacher.image_out.weight == 0) and torch.all(teacher.text_out.weight == 0)
    assert validation_score({f"{d}_r{k}": 6.0 for d in ("t2i", "i2t") for k in (1, 5, 10)}) == 6.0


def test_temperature_calibration_follows_how_informative_the_frozen_scores_are():
    from embedkd.methods.dclip.features import PairFeatures
    from embedkd.methods.dclip.train import calibrate_temperature

    g = torch.Generator().manual_seed(0)
    n = 32

    def feats(text_global, image):
        return PairFeatures(
            images=[f"img{i}" for i in range(n)],
            regions=image[:, None].repeat(1, 2, 1),
            region_mask=torch.ones(n, 2, dtype=torch.bool),
            tokens=torch.zeros(n, 1, D),
            token_mask=torch.ones(n, 1, dtype=torch.bool),
            text_global=text_global,
            image_index=torch.arange(n),
        )

    image = torch.randn(n, D, generator=g)
    # captions equal to their image: sharper is always better, the smallest temperature wins
    assert calibrate_temperature(feats(image.clone(), image), 8, grid=(0.05, 0.2, 1.0)) == 0.05
    # captions unrelated to the images: the flattest scores win
    unrelated = torch.randn(n, D, generator=g)
    assert calibrate_temperature(feats(unrelated, image), 8, grid=(0.05, 0.2, 1.0)) == 1.0
