"""Students: layer pruning, projection to the teacher dim, least-squares projection init."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from embedkd.errors import ConfigError
from embedkd.students import (
    build_student,
    evenly_spaced_layers,
    init_projection_lstsq,
    prune_layers,
    quantize_for_cpu,
    set_trainable,
)


def test_evenly_spaced_layers():
    assert evenly_spaced_layers(6, 3) == (0, 2, 5)  # 0, 2.5, 5: Python rounds half to even
    assert evenly_spaced_layers(12, 3) == (0, 6, 11)  # 5.5 -> 6
    assert evenly_spaced_layers(12, 4) == (0, 4, 7, 11)
    assert evenly_spaced_layers(6, 6) == (0, 1, 2, 3, 4, 5)
    assert evenly_spaced_layers(6, 1) == (5,)
    assert evenly_spaced_layers(4, 2) == (0, 3)


def test_prune_keeps_exactly_the_named_layers(tiny_st_factory):
    model = SentenceTransformer(tiny_st_factory(layers=4), device="cpu")
    layers = model[0].auto_model.encoder.layer
    kept_params = [layers[i].attention.self.query.weight.clone() for i in (1, 3)]
    assert prune_layers(model, layers=(1, 3)) == (1, 3)
    new = model[0].auto_model.encoder.layer
    assert len(new) == 2 and model[0].auto_model.config.num_hidden_layers == 2
    for old, layer in zip(kept_params, new):
        assert torch.equal(old, layer.attention.self.query.weight)
    assert model.encode(["still works"]).shape == (1, 32)


@pytest.mark.parametrize("layers", [(0, 7), (2, 1), (1, 1)])
def test_prune_rejects_bad_layers(tiny_st_factory, layers):
    model = SentenceTransformer(tiny_st_factory(layers=4), device="cpu")
    with pytest.raises(ConfigError, match="student-layers"):
        prune_layers(model, layers=layers)


def test_projection_is_saved_inside_the_student(tiny_st_factory, tmp_path):
    student = build_student(tiny_st_factory(hidden=32), teacher_dim=48, num_layers=1)
    assert student.get_embedding_dimension() == 48
    student.save(str(tmp_path / "s"))
    reloaded = SentenceTransformer(str(tmp_path / "s"), device="cpu")
    assert reloaded.encode(["hi"]).shape == (1, 48)
    np.testing.assert_allclose(reloaded.encode(["hi"]), student.encode(["hi"]), atol=1e-5)


def test_no_projection_with_mismatched_dims_is_an_error(tiny_st_factory):
    with pytest.raises(ConfigError, match="32-d .* 48-d"):
        build_student(tiny_st_factory(hidden=32), teacher_dim=48, projection=False)


def test_same_dims_get_no_projection(tiny_st_factory):
    student = build_student(tiny_st_factory(hidden=32), teacher_dim=32)
    assert type(student[-1]).__name__ != "Dense"


def test_lstsq_init_recovers_a_linear_target(tiny_st_factory):
    student = build_student(tiny_st_factory(hidden=32), teacher_dim=16)
    texts = [f"text number {i} with words {i * 7 % 13}" for i in range(120)]
    body = SentenceTransformer(modules=list(student)[:-1], device="cpu")
    feats = body.encode(texts)
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(32, 16)), rng.normal(size=16)
    targets = (feats @ w + b).astype(np.float32)
    fit = init_projection_lstsq(student, texts, targets)
    assert fit > 0.999
    np.testing.assert_allclose(student.encode(texts[:5]), targets[:5], atol=1e-2)


def test_set_trainable_drops_dropout_and_survives_save(tiny_st_factory, tmp_path):
    student = build_student(tiny_st_factory(hidden=32), teacher_dim=48)
    set_trainable(student, dropout=0.0)
    assert all(m.p == 0.0 for m in student.modules() if isinstance(m, torch.nn.Dropout))
    student.train()
    a, b = (student.forward(student.tokenize(["same text twice"]))["sentence_embedding"] for _ in range(2))
    assert torch.equal(a, b)  # no dropout noise in training mode
    student.save(str(tmp_path / "s"))
    reloaded = SentenceTransformer(str(tmp_path / "s"), device="cpu")
    assert reloaded[0].auto_model.config.hidden_dropout_prob == 0.0


def test_set_trainable_freezes_only_token_embeddings(tiny_st_factory):
    student = build_student(tiny_st_factory(hidden=32), teacher_dim=48)
    set_trainable(student, freeze_embeddings=True)
    frozen = [n for n, p in student.named_parameters() if not p.requires_grad]
    assert frozen == ["0.model.embeddings.word_embeddings.weight"]


def test_lstsq_init_finds_the_dense_before_a_normalize(tiny_st_factory):
    from sentence_transformers.sentence_transformer.modules import Normalize

    student = build_student(tiny_st_factory(hidden=32), teacher_dim=16)
    student = SentenceTransformer(modules=[*student, Normalize()], device="cpu")
    texts = [f"text number {i} with words {i * 7 % 13}" for i in range(120)]
    targets = np.random.default_rng(1).normal(size=(len(texts), 16)).astype(np.float32)
    dense_before = student[-2].linear.weight.clone()
    init_projection_lstsq(student, texts, targets)
    assert not torch.equal(dense_before, student[-2].linear.weight)


def test_int8_quantization_keeps_the_vectors_close(tiny_st_factory):
    texts = ["the heart is enlarged", "no pleural effusion", "a small left pneumothorax"]
    model = SentenceTransformer(tiny_st_factory(hidden=32, seed=2), device="cpu")
    before = model.encode(texts, normalize_embeddings=True)
    quantize_for_cpu(model, "int8")
    quantized = [m for m in model.modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]
    assert quantized and not any(type(m) is torch.nn.Linear for m in model.modules())  # all swapped
    after = model.encode(texts, normalize_embeddings=True)
    cosines = np.sum(before * after, axis=1)
    assert np.all(cosines > 0.98) and not np.allclose(before, after)  # close, and really quantized


def test_int8_quantization_rejects_bad_input(tiny_st_factory):
    model = SentenceTransformer(tiny_st_factory(hidden=32, seed=2), device="cpu")
    with pytest.raises(ConfigError, match="quantize must be one of int8, got 'int4'"):
        quantize_for_cpu(model, "int4")
    model.to("meta")
    with pytest.raises(ConfigError, match="runs on the CPU only; the model is on meta"):
        quantize_for_cpu(model, "int8")
