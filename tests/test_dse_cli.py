"""DSE through ``embedkd.cli.main``: bad input gives one ``error:`` line and a non-zero exit."""

from __future__ import annotations

import json

import pytest

from embedkd.cli import main
from tests.test_dse import build_tiny_cross_encoder, write_pairs


@pytest.fixture(scope="module")
def ce_paths(tmp_path_factory, minilm_path):
    root = tmp_path_factory.mktemp("ces")
    return {k: build_tiny_cross_encoder(root / f"ce{k}", minilm_path, k) for k in (1, 3)}


def _error_lines(capsys) -> list[str]:
    err = capsys.readouterr().err
    return [line for line in err.splitlines() if line.startswith("error:")]


def _distill(teacher: str, student: str, data, out, task: str, *extra: str) -> list[str]:
    return [
        "-q",
        "distill",
        "--method",
        "dse",
        "--teacher",
        teacher,
        "--student",
        student,
        "--data",
        str(data),
        "--output",
        str(out),
        "--task",
        task,
        "--max-steps",
        "1",
        "--batch-size",
        "4",
        *extra,
    ]


@pytest.mark.parametrize(
    ("content", "task", "message"),
    [
        ("sentence1\tsentence2\tlabel\nhello\t\t1\n", "binary", "second text of the pair is missing"),
        ("sentence1\tsentence2\tlabel\na\tb\t7\n", "binary", "outside the task's range"),
        ("sentence1\tsentence2\tlabel\na\tb\t1\nc\td\tneutral\n", "nli", "mixed label types"),
    ],
)
def test_bad_pairs_give_one_error_line(tmp_path, capsys, ce_paths, tiny_st_factory, content, task, message):
    (tmp_path / "bad.tsv").write_text(content)
    code = main(_distill(ce_paths[1], tiny_st_factory(), tmp_path / "bad.tsv", tmp_path / "o", task))
    lines = _error_lines(capsys)
    assert code == 2 and len(lines) == 1 and message in lines[0]
    assert not (tmp_path / "o").exists()


def test_teacher_output_size_mismatch(tmp_path, capsys, ce_paths, tiny_st_factory):
    data = write_pairs(tmp_path / "p.tsv", [0.2, 0.8])
    code = main(
        _distill(
            ce_paths[3], tiny_st_factory(), data, tmp_path / "o", "regression", "--cache-dir", str(tmp_path)
        )
    )
    lines = _error_lines(capsys)
    assert code == 2 and len(lines) == 1
    assert "outputs 3 logit(s) but --task regression needs 1" in lines[0]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--lambda", "2"), "--lambda must lie in [0, 1], got 2.0"),
        (("--head-hidden", "0"), "--head-hidden must be >= 1, got 0"),
        (("--resume",), "--resume given but"),
    ],
)
def test_bad_options_give_one_error_line(tmp_path, capsys, ce_paths, tiny_st_factory, extra, message):
    data = write_pairs(tmp_path / "p.tsv", [1, 0])
    assert main(_distill(ce_paths[1], tiny_st_factory(), data, tmp_path / "o", "binary", *extra)) == 2
    lines = _error_lines(capsys)
    assert len(lines) == 1 and message in lines[0]


def test_task_is_required(tmp_path, capsys, ce_paths, tiny_st_factory):
    argv = _distill(ce_paths[1], tiny_st_factory(), tmp_path / "p.tsv", tmp_path / "o", "binary")
    argv = argv[: argv.index("--task")] + argv[argv.index("--task") + 2 :]
    assert main(argv) == 2
    assert "--task is required for --method dse" in _error_lines(capsys)[0]


def test_bad_lambda_and_unlabelled_control(tmp_path, capsys, ce_paths, tiny_st_factory):
    data = write_pairs(tmp_path / "p.tsv", [1, 0])
    assert (
        main(_distill(ce_paths[1], tiny_st_factory(), data, tmp_path / "o", "binary", "--lambda", "1.5")) == 2
    )
    assert "--lambda must lie in [0, 1], got 1.5" in _error_lines(capsys)[0]
    (tmp_path / "u.tsv").write_text("sentence1\tsentence2\na\tb\n")
    code = main(
        _distill(
            ce_paths[1], tiny_st_factory(), tmp_path / "u.tsv", tmp_path / "o", "binary", "--lambda", "0"
        )
    )
    assert code == 2 and "some pairs are unlabelled" in _error_lines(capsys)[0]


def test_teacher_command_errors(tmp_path, capsys, minilm_path):
    (tmp_path / "u.tsv").write_text("sentence1\tsentence2\na\tb\n")
    args = ["-q", "teacher", "cross-encoder", "--init", minilm_path, "--pairs", str(tmp_path / "u.tsv")]
    assert main([*args, "--task", "binary", "--output", str(tmp_path / "ce")]) == 2
    assert "have no label" in _error_lines(capsys)[0]
    assert main([*args[:-1], str(tmp_path / "missing.tsv"), "--task", "binary", "--output", "x"]) == 2
    assert "does not exist" in _error_lines(capsys)[0]
    assert main(["-q", "teacher", "cross-encoder", *args[5:], "--task", "nli", "--output", "x"]) == 2
    assert "--init is required" in _error_lines(capsys)[0]
    assert main([*args, "--task", "nli", "--output", "x", "--lr", "0"]) == 2
    assert "--lr must be > 0, got 0.0" in _error_lines(capsys)[0]


def test_teacher_command_trains_a_cross_encoder(tmp_path, capsys, tiny_st_factory):
    from embedkd.methods.dse.teacher import CrossEncoderTeacher

    data = write_pairs(tmp_path / "p.tsv", ["entailment", "neutral", "contradiction"], n=6)
    out = tmp_path / "ce"
    args = [
        "-q",
        "teacher",
        "cross-encoder",
        "--init",
        tiny_st_factory(),
        "--pairs",
        str(data),
        "--task",
        "nli",
    ]
    assert main([*args, "--output", str(out), "--max-steps", "1", "--batch-size", "3"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(out)
    teacher = CrossEncoderTeacher(str(out), "nli", cache_dir=tmp_path / "cache")
    assert teacher.score_pairs(["a"], ["b"]).shape == (1, 3)
    meta = json.loads((out / "embedkd_teacher.json").read_text())
    keys = {"init", "task", "pairs", "epochs", "max_steps", "batch_size", "lr", "max_length", "seed"}
    assert keys | {"max_samples", "steps", "pairs_seen"} <= set(meta)
    assert (meta["task"], meta["pairs"], meta["steps"], meta["batch_size"]) == ("nli", [str(data)], 1, 3)
