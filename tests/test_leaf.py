"""LEAF end to end on tiny models: output format, model card, fidelity, resume, black-box teacher, errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sentence_transformers import SentenceTransformer

import embedkd
from embedkd.cli import main
from embedkd.data import split_texts

TEXTS = [f"sentence {i} talks about topic {i % 9} and item {i * 31 % 17}" for i in range(240)]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "texts.txt"
    path.write_text("\n".join(TEXTS + ["", "   ", TEXTS[0]]) + "\n")
    return path


@pytest.fixture(scope="module")
def models(tiny_st_factory):
    return {
        "teacher": tiny_st_factory(hidden=48, layers=2, seed=1),
        "student": tiny_st_factory(hidden=32, layers=2, seed=2),
    }


def test_split_is_deterministic_and_disjoint():
    train, held = split_texts(TEXTS, max_samples=100, heldout=20, seed=3)
    assert len(train) == 100 and len(held) == 20 and not set(train) & set(held)
    assert (train, held) == split_texts(TEXTS, max_samples=100, heldout=20, seed=3)
    assert split_texts(TEXTS, None, 20, seed=4)[1] != held


def _distill(models, data_file, tmp_path, **kwargs):
    """``embedkd.distill`` of the tiny models on TEXTS (24 held out, batch 16) into ``tmp_path``."""
    return embedkd.distill(
        teacher=models["teacher"],
        student=models["student"],
        data=data_file,
        output=tmp_path / "out",
        heldout=24,
        batch_size=16,
        cache_dir=tmp_path / "cache",
        **kwargs,
    )


def test_distill_python_api(models, data_file, tmp_path):
    out = _distill(models, data_file, tmp_path, epochs=2, lr=5e-4, eval_steps=10)
    student = SentenceTransformer(str(out), device="cpu")
    assert student.encode(["hi"]).shape == (1, 48)  # projected to the teacher's dimension
    report = json.loads((out / "embedkd_fidelity.json").read_text())
    assert report["train_texts"] == len(TEXTS) - 24 and report["heldout_texts"] == 24
    assert report["steps"] == 2 * ((len(TEXTS) - 24 + 15) // 16)
    # The reported fidelity is the saved student's, measured against the teacher on held-out texts.
    teacher = SentenceTransformer(models["teacher"], device="cpu")
    _, held = split_texts(TEXTS, None, 24, seed=42)
    s, t = student.encode(held), teacher.encode(held)
    cos = ((s * t).sum(1) / np.linalg.norm(s, axis=1) / np.linalg.norm(t, axis=1)).mean()
    assert report["heldout_cosine"] == pytest.approx(float(cos), abs=1e-4)
    card = (out / "README.md").read_text()
    assert (
        "embedkd LEAF student" in card and "held-out cosine to teacher" in card and models["teacher"] in card
    )
    state = json.loads(sorted((out / "checkpoints").glob("checkpoint-*/trainer_state.json"))[-1].read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]  # it learned


def test_augmented_texts_are_teacher_labelled_and_trained_on(models, data_file, tmp_path):
    from embedkd.cache import TeacherCache
    from embedkd.teachers import load_teacher

    out = _distill(models, data_file, tmp_path, augment=2, epochs=1)
    report = json.loads((out / "embedkd_fidelity.json").read_text())
    n_train, n_aug = len(TEXTS) - 24, report["augmented_texts"]
    assert n_train < n_aug <= 2 * n_train
    assert report["steps"] == (n_train + n_aug + 15) // 16  # one epoch over real + augmented texts
    cache = TeacherCache.for_teacher(load_teacher(models["teacher"]), tmp_path / "cache")
    assert len(cache) == n_train + 24 + n_aug  # every augmented text was labelled by the teacher


def test_black_box_teacher_from_precomputed_vectors(models, tmp_path, monkeypatch):
    from sentence_transformers.sentence_transformer import losses

    matryoshka, real_loss = [], losses.MatryoshkaLoss

    def spy(model, loss, matryoshka_dims, *args, **kwargs):
        matryoshka.append(list(matryoshka_dims))
        return real_loss(model, loss, matryoshka_dims, *args, **kwargs)

    monkeypatch.setattr(losses, "MatryoshkaLoss", spy)
    teacher = SentenceTransformer(models["teacher"], device="cpu")
    np.save(tmp_path / "vecs.npy", teacher.encode(TEXTS))
    (tmp_path / "vecs.txt").write_text("\n".join(TEXTS) + "\n")
    (tmp_path / "data.txt").write_text("\n".join(TEXTS) + "\n")
    rc = main(
        [
            "distill",
            "--teacher",
            str(tmp_path / "vecs.npy"),
            "--student",
            models["student"],
            "--data",
            str(tmp_path / "data.txt"),
            "--output",
            str(tmp_path / "out"),
            "--max-steps",
            "3",
            "--heldout",
            "20",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--matryoshka-dims",
            "16",
        ]
    )
    assert rc == 0
    assert SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(["x"]).shape == (1, 48)
    assert matryoshka == [[48, 16]]  # --matryoshka-dims 16: trained at the full 48 dims and at 16
    assert json.loads((tmp_path / "out" / "embedkd_fidelity.json").read_text())["matryoshka_dims"] == [16]


def test_resume_continues_from_the_last_checkpoint(models, data_file, tmp_path):
    common = [
        "distill",
        "--teacher",
        models["teacher"],
        "--student",
        models["student"],
        "--data",
        str(data_file),
        "--output",
        str(tmp_path / "out"),
        "--heldout",
        "20",
        "--cache-dir",
        str(tmp_path / "cache"),
        "--save-steps",
        "2",
        "--batch-size",
        "8",
    ]
    assert main([*common, "--max-steps", "2"]) == 0
    assert (tmp_path / "out" / "checkpoints" / "checkpoint-2").is_dir()
    assert main([*common, "--max-steps", "4", "--resume"]) == 0
    report = json.loads((tmp_path / "out" / "embedkd_fidelity.json").read_text())
    assert report["steps"] == 4


def test_save_asym_routes_queries_to_student_and_documents_to_teacher(models, data_file, tmp_path):
    out = embedkd.distill(
        teacher=models["teacher"],
        student=models["student"],
        data=data_file,
        output=tmp_path / "out",
        heldout=20,
        max_steps=2,
        cache_dir=tmp_path / "c",
        save_asym=True,
    )
    asym = SentenceTransformer(str(out / "asym"), device="cpu")
    student = SentenceTransformer(str(out), device="cpu")
    teacher = SentenceTransformer(models["teacher"], device="cpu")
    np.testing.assert_allclose(asym.encode_query(["a query"]), student.encode(["a query"]), atol=1e-5)
    np.testing.assert_allclose(asym.encode_document(["a doc"]), teacher.encode(["a doc"]), atol=1e-5)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "/nonexistent/texts.txt"], "does not exist"),
        (["--student", "no-such-org/no-such-model"], "not a local directory"),
        (["--no-projection"], "projection is disabled"),
        (["--resume"], "holds no checkpoint"),
        (["--student-layers", "0,9"], "student-layers"),
        (["--augment", "-2"], "--augment must be >= 0"),
    ],
)
def test_bad_input_is_one_clear_error(models, data_file, tmp_path, capsys, extra, message):
    args = {
        "--teacher": models["teacher"],
        "--student": models["student"],
        "--data": str(data_file),
        "--output": str(tmp_path / "out"),
    }
    flags = [a for a in extra if a.startswith("--")]
    argv = ["distill"] + [x for k, v in args.items() if k not in flags for x in (k, v)] + extra
    argv += ["--cache-dir", str(tmp_path / "cache"), "--max-steps", "1"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in err


def test_unwritable_output_and_empty_data(models, data_file, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    assert (
        main(
            [
                "distill",
                "--teacher",
                models["teacher"],
                "--student",
                models["student"],
                "--data",
                str(data_file),
                "--output",
                str(blocker / "out"),
            ]
        )
        == 2
    )
    assert "not writable" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n\n")
    assert (
        main(
            [
                "distill",
                "--teacher",
                models["teacher"],
                "--student",
                models["student"],
                "--data",
                str(empty),
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "no non-empty text" in capsys.readouterr().err


@pytest.mark.e2e
def test_torchrun_two_processes(models, data_file, tmp_path):
    """The same command runs data-parallel under torchrun (gloo on CPU)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "embedkd",
        "distill",
        "--teacher",
        models["teacher"],
        "--student",
        models["student"],
        "--data",
        str(data_file),
        "--output",
        str(tmp_path / "out"),
        "--max-steps",
        "3",
        "--batch-size",
        "8",
        "--heldout",
        "20",
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    # Own process group: on a timeout the workers go too (they would hang without their launcher).
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        _, stderr = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 0, stderr[-3000:]
    report = json.loads((tmp_path / "out" / "embedkd_fidelity.json").read_text())
    assert report["world_size"] == 2 and report["steps"] == 3
    assert SentenceTransformer(str(tmp_path / "out"), device="cpu").encode(["x"]).shape == (1, 48)


# --------------------------------------------------------------------------- teacher-derived students


def test_student_cut_from_the_teacher_keeps_its_space_and_layers(tiny_st_factory, data_file, tmp_path):
    teacher = tiny_st_factory(hidden=48, layers=4, seed=5)
    out = embedkd.distill(
        teacher=teacher,
        student="teacher",
        data=data_file,
        output=tmp_path / "out",
        student_num_layers=2,
        layer_rule="first",
        heldout=24,
        batch_size=16,
        max_steps=3,
        cache_dir=tmp_path / "cache",
    )
    report = json.loads((out / "embedkd_fidelity.json").read_text())
    assert report["student_from_teacher"] is True and report["student"] == str(teacher)
    assert report["student_kept_layers"] == [0, 1]
    assert "| teacher layers kept | [0, 1] " in (out / "README.md").read_text()
    model = SentenceTransformer(str(out))
    assert model[0].auto_model.config.num_hidden_layers == 2
    # Same tokenizer, pooling and dimension as the teacher: no projection module.
    assert [type(m).__name__ for m in model] == [type(m).__name__ for m in SentenceTransformer(teacher)]
    assert model.encode(["a text"]).shape == (1, 48)


def test_evenly_spaced_layers_are_the_default_rule(tiny_st_factory, tmp_path):
    from embedkd.methods.leaf import LeafConfig
    from embedkd.methods.leaf.train import kept_layers

    teacher = tiny_st_factory(hidden=48, layers=4, seed=5)
    config = LeafConfig(teacher=teacher, student="teacher", student_num_layers=3, output=str(tmp_path))
    assert kept_layers(config) == (0, 2, 3)  # first and last always kept
    assert kept_layers(LeafConfig(teacher=teacher, student="teacher", output=str(tmp_path))) is None


def test_black_box_teacher_cannot_give_its_layers(tmp_path):
    with pytest.raises(embedkd.EmbedkdError, match="black box"):
        embedkd.distill(teacher=str(tmp_path / "vectors.npy"), student="teacher", output=str(tmp_path))


def test_source_filter_and_word_cap_pick_query_like_rows(tmp_path):
    from embedkd.data import load_texts

    path = tmp_path / "mixed.tsv"
    rows = ["source\ttext", "dpr-nq\twho wrote hamlet", "wiki\ta long encyclopedic sentence about many things here",
            "msmarco-passage\twhat is a kidney stone made of and how does it form in the body"]  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    assert load_texts(path, sources=["dpr", "msmarco"], max_words=6) == ["who wrote hamlet"]
    with pytest.raises(embedkd.EmbedkdError, match="no rows of source"):
        load_texts(path, sources=["fever"])


def test_model_card_names_text_sources_and_their_terms():
    from embedkd.modelcard import render_card

    card = render_card({"method": "leaf", "data_sources": ["msmarco", "fever", "custom"]})
    assert "msmarco (MS MARCO, non-commercial research only)" in card
    assert "fever (FEVER, CC BY-SA 3.0)" in card and "custom (terms: see the data)" in card
