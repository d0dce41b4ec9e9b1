"""`embedkd eval` pair tasks: DSE student, cross-encoder teacher and control scored through their pair heads."""

from __future__ import annotations

import json

import pytest
from test_dse import build_tiny_cross_encoder, write_pairs

from embedkd.cli import main


@pytest.fixture(scope="module")
def dse_models(tmp_path_factory, tiny_st_factory, minilm_path):
    from embedkd.methods.dse import distill_dse

    root = tmp_path_factory.mktemp("evalpairs")
    teacher = build_tiny_cross_encoder(root / "ce", minilm_path, 1)
    train = write_pairs(root / "train.tsv", [0, 1])
    common = dict(task="binary", max_steps=2, batch_size=4, cache_dir=root / "cache", show_progress=False)
    student = distill_dse(teacher, tiny_st_factory(), [train], root / "dse", lam=0.5, **common)
    control = distill_dse(teacher, tiny_st_factory(), [train], root / "ctl", lam=0.0, **common)
    test = write_pairs(root / "test.tsv", [1, 0, 0], n=9)
    return {"teacher": teacher, "student": str(student), "control": str(control), "test": test}


def test_pair_task_rows_are_the_pair_heads_own_scores(dse_models, tmp_path, capsys):
    from embedkd.methods.dse.data import load_sentence_pairs
    from embedkd.methods.dse.metrics import evaluate_pairs
    from embedkd.methods.dse.student import load_dse_student
    from embedkd.methods.dse.teacher import CrossEncoderTeacher

    m = dse_models
    argv = ["eval", "--model", m["student"], "--teacher", m["teacher"], "--control", m["control"]]
    argv += [
        "--mode",
        "student,teacher",
        "--tasks",
        f"pairs:binary:{m['test']}",
        "--output",
        str(tmp_path / "o"),
    ]
    assert main(argv) == 0
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    rows = {r["mode"]: r for r in report["results"]}
    assert set(rows) == {"student", "teacher", "control"}
    assert report["control"] == m["control"] and all(r["main_metric"] == "accuracy" for r in rows.values())
    pairs = load_sentence_pairs(str(m["test"]), "binary")
    expected = {
        "student": evaluate_pairs(load_dse_student(m["student"]), pairs),
        "control": evaluate_pairs(load_dse_student(m["control"]), pairs),
        "teacher": evaluate_pairs(CrossEncoderTeacher(m["teacher"], task="binary"), pairs),
    }
    for mode, metrics in expected.items():
        assert rows[mode]["main_score"] == pytest.approx(metrics["accuracy"] / 100)
        assert rows[mode]["scores"]["f1"] == pytest.approx(metrics["f1"])
    assert rows["student"]["ratio_to_teacher"] == pytest.approx(
        rows["student"]["main_score"] / rows["teacher"]["main_score"]
    )
    assert "| control |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--tasks", "pairs:binary:TEST", "beir:somewhere"], "separate run"),
        (["--tasks", "pairs:binary:TEST", "--dims", "8"], "--dims and --precision"),
        (["--tasks", "pairs:binary:TEST", "--mode", "asym", "--teacher", "T"], "no asym mode"),
        (["--tasks", "pairs:ranking:TEST"], "unknown pair task 'ranking'"),
        (["--tasks", "pairs:binary:/no/such/file.tsv"], "does not exist"),
        (["--tasks", "pairs:binary"], "pairs:regression|binary|nli:PATH"),
        (["--tasks", "pairs:regression:TEST"], "trained for binary pairs"),
        (["--tasks", "beir:somewhere", "--control", "C"], "--control applies to pair tasks"),
    ],
)
def test_bad_pair_task_input_is_one_clear_error(dse_models, tmp_path, capsys, extra, message):
    extra = [x.replace("TEST", str(dse_models["test"])) for x in extra]
    argv = ["eval", "--model", dse_models["student"], "--output", str(tmp_path / "o"), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
