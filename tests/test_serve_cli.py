"""``embedkd index`` / ``embedkd serve``: a real index build, and one clear error line for bad input."""

from __future__ import annotations

import json

import pytest
from serve_helpers import write_corpus

from embedkd.cli import main


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_st_factory):
    root = tmp_path_factory.mktemp("serve-cli")
    teacher = tiny_st_factory(hidden=32, seed=0)
    corpus = write_corpus(root / "corpus.jsonl", 30)
    code = main(
        [
            "index",
            "--teacher",
            teacher,
            "--corpus",
            str(corpus),
            "--index-dir",
            str(root / "idx"),
            "--index-type",
            "hnsw",
            "--shards",
            "2",
            "--max-seq-length",
            "48",
            "--cache-dir",
            str(root / "c"),
        ]
    )
    assert code == 0
    return root, teacher, corpus


def test_index_records_teacher_and_parameters(built, capsys):
    root, teacher, _ = built
    meta = json.loads((root / "idx" / "meta.json").read_text())
    assert meta["teacher_id"].startswith(f"st:{teacher}@seq48") and meta["teacher_max_seq_length"] == 48
    assert meta["dim"] == 32 and meta["index_type"] == "hnsw" and meta["shards"] == 2
    assert meta["normalize"] is True and meta["params"] == {"hnsw_m": 16, "hnsw_ef_search": 64}
    assert sorted(p.name for p in (root / "idx" / "snapshots" / "snap-000000000000").iterdir()) == [
        "manifest.json",
        "shard-000.faiss",
        "shard-001.faiss",
    ]


def _error_of(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 1 and err[-1].startswith("error: ")
    return err[-1]


def test_bad_index_input(built, capsys, tmp_path):
    root, teacher, corpus = built
    assert "does not exist" in _error_of(
        [
            "index",
            "--teacher",
            teacher,
            "--corpus",
            str(tmp_path / "nope"),
            "--index-dir",
            str(tmp_path / "i"),
        ],
        capsys,
    )
    assert "already exists (pass --overwrite" in _error_of(
        [
            "index",
            "--teacher",
            teacher,
            "--corpus",
            str(corpus),
            "--index-dir",
            str(root / "idx"),
            "--cache-dir",
            str(root / "c"),
        ],
        capsys,
    )
    assert "--shards must be >= 1" in _error_of(
        [
            "index",
            "--teacher",
            teacher,
            "--corpus",
            str(corpus),
            "--index-dir",
            str(tmp_path / "i"),
            "--shards",
            "0",
        ],
        capsys,
    )


def test_bad_serve_input(built, capsys, tmp_path, tiny_st_factory, monkeypatch):
    root, teacher, _ = built
    monkeypatch.delenv("EMBEDKD_STUDENT", raising=False)
    assert "--student (EMBEDKD_STUDENT): Field required" in _error_of(
        ["serve", "--index-dir", str(root / "idx")], capsys
    )
    assert "does not exist" in _error_of(
        ["serve", "--index-dir", str(tmp_path / "missing"), "--student", teacher], capsys
    )
    assert "not an embedkd index directory" in _error_of(
        ["serve", "--index-dir", str(tmp_path), "--student", teacher], capsys
    )
    msg = _error_of(
        ["serve", "--index-dir", str(root / "idx"), "--student", tiny_st_factory(hidden=48)], capsys
    )
    assert "outputs 48-d vectors but the index was built by teacher" in msg and "32-d" in msg
    msg = _error_of(
        [
            "serve",
            "--index-dir",
            str(root / "idx"),
            "--student",
            teacher,
            "--teacher",
            tiny_st_factory(hidden=32, seed=3),
        ],
        capsys,
    )
    assert "but the index was built by" in msg


def test_serve_refuses_a_student_of_another_teacher_and_a_monitor_without_teacher(built, capsys, tmp_path):
    """Start-up checks of issue 17: the teacher a student records, and the monitor's need of a teacher."""
    import shutil

    root, teacher, _ = built
    student = tmp_path / "student"
    shutil.copytree(teacher, student)
    (student / "embedkd_fidelity.json").write_text(json.dumps({"teacher": "st:some/other-model@seq64"}))
    msg = _error_of(["serve", "--index-dir", str(root / "idx"), "--student", str(student)], capsys)
    assert "was distilled from teacher 'st:some/other-model@seq64' but the index was built by" in msg
    meta = json.loads((root / "idx" / "meta.json").read_text())
    same = meta["teacher_id"].replace("@seq48", "@seq16")  # another sequence length: the same space
    (student / "embedkd_fidelity.json").write_text(json.dumps({"teacher": same}))
    msg = _error_of(
        ["serve", "--index-dir", str(root / "idx"), "--student", str(student), "--monitor-sample", "0.5"],
        capsys,
    )
    assert "--monitor-sample 0.5 needs the teacher: pass --teacher" in msg
    msg = _error_of(
        [
            "serve",
            "--index-dir",
            str(root / "idx"),
            "--student",
            teacher,
            "--students-dir",
            str(tmp_path / "no"),
        ],
        capsys,
    )
    assert msg.startswith("error: --students-dir (EMBEDKD_STUDENTS_DIR):")
