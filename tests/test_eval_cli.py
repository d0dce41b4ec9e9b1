"""``embedkd eval`` end to end with tiny models, and one clear error line for every bad input."""

from __future__ import annotations

import json

import pytest
from eval_fakes import write_beir, write_sts

from embedkd.cli import main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-data")
    return {"beir": write_beir(root / "beir-mini"), "sts": write_sts(root / "sts-mini"), "root": root}


def test_eval_command_end_to_end(tiny_st_factory, data, tmp_path, capsys):
    student, teacher = (
        tiny_st_factory(hidden=32, layers=1, seed=1),
        tiny_st_factory(hidden=32, layers=1, seed=2),
    )
    out = tmp_path / "out"
    argv = [
        "eval",
        "--model",
        student,
        "--teacher",
        teacher,
        "--mode",
        "student,teacher,asym",
        "--tasks",
        f"beir:{data['beir']}",
        f"sts:{data['sts']}",
        "--dims",
        "32,16",
        "--precision",
        "float32,binary",
        "--output",
        str(out),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    assert main(["-q", *argv]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| task | mode | dim | precision |") and "results.json" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["command"] == "embedkd -q " + " ".join(argv)
    assert len(results["results"]) == 2 * 3 * 2 * 2  # tasks x modes x dims x precisions
    assert {r["task"] for r in results["results"]} == {"beir-mini", "sts-mini"}
    teacher = {
        (r["task"], r["dim"], r["precision"]): r["main_score"]
        for r in results["results"]
        if r["mode"] == "teacher"
    }
    full = {
        task: score
        for (task, dim, precision), score in teacher.items()
        if (dim, precision) == (32, "float32")
    }
    for r in results[
        "results"
    ]:  # every row divided by the teacher's row at its dim/precision, and at full float32
        assert 0.0 < r["main_score"] <= 1.0
        assert r["ratio_to_teacher"] == pytest.approx(
            r["main_score"] / teacher[r["task"], r["dim"], r["precision"]]
        )
        assert r["ratio_to_teacher_full_float32"] == pytest.approx(r["main_score"] / full[r["task"]])
    assert set(results["fidelity"]) == {"beir-mini", "sts-mini"}
    assert {p.name for p in out.glob("*.png")} == {
        f"plot_{t}_{a}.png" for t in ("beir-mini", "sts-mini") for a in ("dims", "precision")
    }
    assert (out / "results.md").read_text().count("\n") == 2 + 24 + 5 + 2


def _break(kind):
    def apply(root):
        folder = write_beir(root / kind)
        if kind == "missing":
            (folder / "queries.jsonl").unlink()
        elif kind == "unknown":
            (folder / "qrels" / "test.tsv").write_text("q1\tdoc-404\t1\n")
        elif kind == "empty":
            (folder / "corpus.jsonl").write_text("\n")
        return folder

    return apply


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (lambda d: ["--tasks", f"beir:{_break('missing')(d['root'])}"], "is missing queries.jsonl[.gz]"),
        (
            lambda d: ["--tasks", f"beir:{_break('unknown')(d['root'])}"],
            "names 1 corpus id(s) not in corpus.jsonl (e.g. 'doc-404')",
        ),
        (lambda d: ["--tasks", f"beir:{_break('empty')(d['root'])}"], "is an empty task: 0 documents"),
        (lambda d: ["--tasks", f"beir:{d['root'] / 'nowhere'}"], "does not exist"),
        (
            lambda d: ["--tasks", f"beir:{d['beir']}", "--dims", "64"],
            "--dims 64 is larger than the student's dimension 32",
        ),
        (lambda d: ["--tasks", f"beir:{d['beir']}", "--mode", "student,sideways"], "unknown mode 'sideways'"),
        (lambda d: ["--tasks", f"beir:{d['beir']}", "--precision", "int4"], "unknown precision 'int4'"),
        (lambda d: ["--tasks", "NotAnMtebTask"], "unknown task 'NotAnMtebTask'"),
        (lambda d: ["--tasks", f"beir:{d['beir']}", "--mode", "asym"], "mode asym needs a --teacher"),
    ],
)
def test_bad_input_is_one_error_line(tiny_st_factory, data, tmp_path, capsys, extra, message):
    argv = ["eval", "--model", tiny_st_factory(hidden=32, layers=1, seed=1), "--output", str(tmp_path / "o")]
    assert main([*argv, *extra(data)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1], err
    assert "Traceback" not in "\n".join(err)


def test_asym_with_different_dims_is_an_error(tiny_st_factory, data, tmp_path, capsys):
    argv = [
        "eval",
        "--model",
        tiny_st_factory(hidden=32, layers=1, seed=1),
        "--teacher",
        tiny_st_factory(hidden=48, layers=1, seed=2),
        "--mode",
        "asym",
        "--tasks",
        f"beir:{data['beir']}",
        "--output",
        str(tmp_path / "o"),
        "--cache-dir",
        str(tmp_path / "c"),
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert (
        err.startswith("error: asym mode needs the student and teacher in one space")
        and "32-d" in err
        and "48-d" in err
    )
