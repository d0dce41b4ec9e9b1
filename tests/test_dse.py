"""DSE: loss values on hand-made tensors, the pair head, the cross-encoder teacher and the student round trip."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from embedkd.errors import ConfigError
from embedkd.methods.dse.loss import DSELoss, dse_loss, task_loss
from embedkd.methods.dse.student import PairHead

SENTS = ["a cat sits on the mat", "a dog runs in the park", "the sun is hot", "rain falls on the town"]


def build_tiny_cross_encoder(path: Path, tokenizer_source: str, num_labels: int, id2label=None) -> str:
    """Save a tiny random BERT sequence classifier that ``CrossEncoder(path)`` loads."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_source)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=num_labels,
        id2label=id2label or {i: f"LABEL_{i}" for i in range(num_labels)},
    )
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny_ce(tmp_path_factory, minilm_path):
    def make(num_labels: int, id2label=None) -> str:
        path = tmp_path_factory.mktemp(f"ce{num_labels}")
        return build_tiny_cross_encoder(path, minilm_path, num_labels, id2label)

    return make


def write_pairs(path: Path, labels: list, n: int = 8) -> Path:
    rows = ["sentence1\tsentence2\tlabel"]
    for i in range(n):
        rows.append(f"{SENTS[i % 4]}\t{SENTS[(i + 1) % 4]} {i}\t{labels[i % len(labels)]}")
    path.write_text("\n".join(rows) + "\n")
    return path


# --- loss values --------------------------------------------------------------------------------


def test_regression_loss_by_hand():
    logits = torch.tensor([[0.0], [2.0]])
    gold = torch.tensor([0.5, 1.0])
    teacher = torch.tensor([[1.0], [2.0]])
    bce = (math.log(2) + math.log(1 + math.exp(-2))) / 2  # -[y log s + (1-y) log(1-s)]
    mse = (1.0**2 + 0.0**2) / 2
    assert float(task_loss(logits, gold, "regression")) == pytest.approx(bce, abs=1e-6)
    assert float(dse_loss(logits, gold, teacher, "regression", 0.5)) == pytest.approx(
        0.5 * bce + 0.5 * mse, abs=1e-6
    )
    assert float(dse_loss(logits, gold, teacher, "regression", 1.0)) == pytest.approx(mse, abs=1e-6)
    assert float(dse_loss(logits, gold, None, "regression", 0.0)) == pytest.approx(bce, abs=1e-6)


def test_unlabelled_rows_only_feed_the_teacher_term():
    logits = torch.tensor([[0.0], [3.0]])
    gold = torch.tensor([0.0, float("nan")])
    teacher = torch.tensor([[0.0], [1.0]])
    task = math.log(2)  # only row 0: logit 0 against label 0
    mse = (0.0 + 4.0) / 2
    assert float(dse_loss(logits, gold, teacher, "binary", 0.25)) == pytest.approx(
        0.75 * task + 0.25 * mse, abs=1e-6
    )
    assert float(task_loss(logits, torch.tensor([float("nan")] * 2), "binary")) == 0.0


def test_nli_loss_by_hand():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    gold = torch.tensor([0.0, 2.0])
    teacher = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 3.0]])
    ce = (-math.log(math.exp(2) / (math.exp(2) + 2)) + math.log(3)) / 2
    mse = 9.0 / 6
    assert float(dse_loss(logits, gold, teacher, "nli", 0.5)) == pytest.approx(0.5 * ce + 0.5 * mse, abs=1e-6)


def test_teacher_term_needs_teacher_logits():
    with pytest.raises(ValueError, match="needs teacher logits"):
        dse_loss(torch.zeros(2, 1), torch.zeros(2), None, "binary", 0.5)


# --- pair head ----------------------------------------------------------------------------------


def test_pair_head_features_and_broadcast():
    head = PairHead(dim=4, num_outputs=3, hidden=8, scale=1.0)
    u = torch.tensor([[1.0, 2.0, 0.0, -1.0]])
    v = torch.tensor([[3.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    feats = head.features(u, v)
    assert feats.shape == (2, 16)
    assert feats[0].tolist() == [1, 2, 0, -1, 3, 0, 1, 1, 3, 0, 0, -1, 2, 2, 1, 2]
    assert head(u, v).shape == (2, 3)
    assert PairHead(dim=16, num_outputs=1).config["scale"] == 4.0


def test_pair_head_save_load(tmp_path):
    head = PairHead(dim=4, num_outputs=1, hidden=8).eval()
    head.save(tmp_path, {"task": "binary"})
    loaded, meta = PairHead.load(tmp_path)
    u, v = torch.randn(3, 4), torch.randn(3, 4)
    assert torch.allclose(head(u, v), loaded(u, v))
    assert meta["task"] == "binary" and meta["head"]["hidden"] == 8


def test_dse_loss_module_trains_head_and_encoder(tiny_st_factory):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(tiny_st_factory(), device="cpu")
    head = PairHead(model.get_embedding_dimension(), 1, hidden=8)
    loss_fn = DSELoss(model, head, "regression", lam=0.5)
    features = [model.preprocess(SENTS[:2]), model.preprocess(SENTS[2:])]
    loss = loss_fn(features, torch.tensor([[0.2, 1.0], [float("nan"), -1.0]]))
    loss.backward()
    assert loss.item() > 0
    assert head.mlp[0].weight.grad.abs().sum() > 0  # the head learns
    encoder_grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert encoder_grads and sum(g.abs().sum().item() for g in encoder_grads) > 0  # and so does the encoder
    assert "(sentence1, sentence2)" in DSELoss.__doc__


# --- teacher --------------------------------------------------------------------------------------


def test_cross_encoder_teacher_shapes_cache_and_binary_reduction(tiny_ce, tmp_path):
    from embedkd.methods.dse.teacher import CrossEncoderTeacher

    teacher = CrossEncoderTeacher(tiny_ce(2), "binary", cache_dir=tmp_path)
    assert teacher.dim == 1
    raw = teacher.model.predict(list(zip(SENTS[:2], SENTS[2:])), activation_fn=torch.nn.Identity())
    logits = teacher.score_pairs(SENTS[:2], SENTS[2:])
    np.testing.assert_allclose(logits[:, 0], raw[:, 1] - raw[:, 0], atol=1e-5)
    calls = []
    teacher.encode = lambda texts, *a, **k: calls.append(texts)  # a cache hit never reaches the model
    np.testing.assert_allclose(teacher.score_pairs(SENTS[:2], SENTS[2:]), logits)
    assert calls == []


def test_nli_teacher_is_reordered_by_its_label_names(tiny_ce, tmp_path):
    from embedkd.methods.dse.teacher import CrossEncoderTeacher

    names = {0: "contradiction", 1: "entailment", 2: "neutral"}
    teacher = CrossEncoderTeacher(tiny_ce(3, names), "nli", cache_dir=tmp_path)
    raw = teacher.model.predict([(SENTS[0], SENTS[1])], activation_fn=torch.nn.Identity())
    got = teacher.score_pairs(SENTS[:1], SENTS[1:2])
    np.testing.assert_allclose(got[0], raw[0][[1, 2, 0]], atol=1e-5)  # entailment, neutral, contradiction


def test_teacher_output_size_must_match_task(tiny_ce):
    from embedkd.methods.dse.teacher import check_num_labels, load_cross_encoder

    with pytest.raises(ConfigError, match="outputs 3 logit"):
        load_cross_encoder(tiny_ce(3), "regression")
    check_num_labels(2, "binary", "x")
    with pytest.raises(ConfigError, match="needs 3"):
        check_num_labels(1, "nli", "x")


# --- end to end -----------------------------------------------------------------------------------


@pytest.mark.parametrize("freeze", [False, True])
def test_distill_dse_round_trip(tiny_ce, tiny_st_factory, tmp_path, freeze):
    from sentence_transformers import SentenceTransformer

    from embedkd.methods.dse import distill_dse
    from embedkd.methods.dse.student import load_dse_student

    data = write_pairs(tmp_path / "train.tsv", [0, 1])
    out = distill_dse(
        tiny_ce(1),
        tiny_st_factory(),
        [data],
        tmp_path / "student",
        task="binary",
        lam=0.5,
        max_steps=2,
        batch_size=4,
        cache_dir=tmp_path / "cache",
        freeze_student=freeze,
        show_progress=False,
    )
    plain = SentenceTransformer(str(out), device="cpu")
    student = load_dse_student(out, device="cpu")
    emb = plain.encode(SENTS, convert_to_tensor=True)
    assert torch.allclose(emb, student.encode(SENTS), atol=1e-5)
    scores = student.score_pairs(SENTS[:3], SENTS[1:4])
    assert scores.shape == (3, 1)
    np.testing.assert_allclose(scores, student.score_embeddings(emb[:3], emb[1:4]), atol=1e-5)
    one_vs_all = student.score_embeddings(emb[0], emb)
    np.testing.assert_allclose(one_vs_all[1], student.score_pairs(SENTS[:1], SENTS[1:2])[0], atol=1e-5)
    assert student.meta["steps"] == 2 and student.meta["fidelity"]["pairs"] == 8
    assert "embedkd DSE student" in (out / "README.md").read_text()


def test_control_needs_no_teacher_but_labels(tiny_st_factory, tmp_path):
    from embedkd.methods.dse import distill_dse
    from embedkd.methods.dse.student import load_dse_student

    data = write_pairs(tmp_path / "train.tsv", [0.1, 0.9])
    out = distill_dse(
        "no-such-teacher",
        tiny_st_factory(),
        data,
        tmp_path / "control",
        task="regression",
        lam=0.0,
        max_steps=1,
        batch_size=4,
        freeze_student=True,
        cache_dir=tmp_path / "cache",
        show_progress=False,
    )
    assert load_dse_student(out).meta["fidelity"] == {}


# --- config, embedkd.distill and resume -------------------------------------------------------------


def _config(**options):
    from embedkd.methods.dse import DSEConfig

    base = dict(teacher="ce", student="st", data=["p.tsv"], output="out", task="binary")
    return DSEConfig(**{**base, **options})


def test_config_defaults_and_validation():
    from embedkd.methods.dse.labels import PairTask

    config = _config()
    assert (config.method, config.task, config.lam) == ("dse", PairTask.BINARY, 0.5)
    assert (config.lr, config.save_steps, config.epochs, config.head_lr, config.head_hidden) == (
        2e-5,
        200,
        1.0,
        1e-3,
        512,
    )
    assert config.to_dict()["task"] == "binary" and config.to_dict()["data"] == ["p.tsv"]
    for options, message in [
        ({"task": None}, "--task is required for --method dse"),
        ({"task": "ranking"}, "--task must be one of regression, binary, nli, got 'ranking'"),
        ({"lam": 2.0}, "--lambda must lie in [0, 1], got 2.0"),
        ({"head_lr": 0.0}, "--head-lr must be > 0, got 0.0"),
        ({"head_hidden": 0}, "--head-hidden must be >= 1, got 0"),
        ({"teacher_max_length": 0}, "--teacher-max-length must be > 0, got 0"),
        ({"resume": True, "freeze_student": True}, "--resume needs checkpoints"),
        ({"data": []}, "--data is empty"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            _config(**options)


def test_embedkd_distill_runs_dse(tiny_ce, tiny_st_factory, tmp_path):
    import embedkd
    from embedkd.methods.dse.student import load_dse_student

    data = write_pairs(tmp_path / "train.tsv", [0.2, 0.8])
    out = embedkd.distill(
        method="dse",
        teacher=tiny_ce(1),
        student=tiny_st_factory(),
        data=data,
        output=tmp_path / "student",
        task="regression",
        lam=0.5,
        max_steps=2,
        batch_size=4,
        cache_dir=tmp_path / "cache",
    )
    student = load_dse_student(out, device="cpu")
    assert student.task.value == "regression" and student.meta["steps"] == 2
    assert student.meta["config"]["method"] == "dse" and student.meta["config"]["lam"] == 0.5
    assert student.score_pairs(SENTS[:2], SENTS[2:]).shape == (2, 1)


def test_resume_reloads_the_head_and_needs_a_checkpoint(tiny_ce, tiny_st_factory, tmp_path):
    from embedkd.methods.dse import distill_dse
    from embedkd.methods.dse.student import PairHead

    data = write_pairs(tmp_path / "train.tsv", [0, 1])
    common = dict(task="binary", batch_size=4, save_steps=1, cache_dir=tmp_path / "cache")
    with pytest.raises(ConfigError, match="--resume given but .* holds no checkpoint"):
        distill_dse(tiny_ce(1), tiny_st_factory(), data, tmp_path / "fresh", resume=True, **common)
    assert not (tmp_path / "fresh").exists()
    out = distill_dse(tiny_ce(1), tiny_st_factory(), data, tmp_path / "s", max_steps=2, **common)
    trained, _ = PairHead.load(out)
    checkpoint, _ = PairHead.load(out / "checkpoints" / "checkpoint-2")
    # Resuming at the last step trains nothing more: the saved head must be the checkpoint's, not a new one.
    again = distill_dse(tiny_ce(1), tiny_st_factory(), data, out, max_steps=2, resume=True, **common)
    resumed, meta = PairHead.load(again)
    for name, value in checkpoint.state_dict().items():
        assert torch.equal(value, trained.state_dict()[name])
        assert torch.equal(value, resumed.state_dict()[name])
    assert meta["steps"] == 2
