"""Tests for the ``embedkd`` command line: fast help, and bad input as one ``error:`` line, exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from embedkd.cli import BUILTIN_COMMANDS, commands, main
from embedkd.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "sentence_transformers", "transformers", "datasets", "faiss", "mteb", "spacy")


def embedkd(*args: str, **kwargs) -> subprocess.Popen:
    """Start ``python -m embedkd ARGS`` (stdout/stderr captured)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "embedkd", *args],
        cwd=kwargs.get("cwd", REPO),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def assert_one_error_line(err: str, *fragments: str) -> str:
    """Exactly one ``error:`` line, no traceback; returns that line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:") or ": error:" in line]
    assert len(lines) == 1, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# --------------------------------------------------------------------------- help


@pytest.mark.e2e
def test_help_is_fast_and_lists_every_command():
    start = time.perf_counter()
    code, out, err = finish(embedkd("--help"))
    seconds = time.perf_counter() - start
    assert code == 0, err
    assert {"distill", "eval", "index", "serve", "adapt", "monitor", "teacher", "ontology", "export"} <= set(
        commands()
    )
    for name in commands():
        assert f"    {name} " in out, f"{name} missing from --help"
    assert "(unavailable)" not in out
    assert seconds < 30, f"embedkd --help took {seconds:.1f} s"


@pytest.mark.e2e
def test_help_imports_no_heavy_library():
    code = (
        "import sys\n"
        "from embedkd.cli import build_parser\n"
        "build_parser(['--help'])\n"
        "for argv in (['distill', '--method', m] for m in sys.argv[1:]):\n"
        "    build_parser(argv)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "-c", code, *METHODS], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"--help imports {proc.stdout.strip()}"


@pytest.mark.parametrize("method", list(METHODS))
def test_distill_help_of_every_method(method, capsys):
    with pytest.raises(SystemExit) as info:
        main(["distill", "--method", method, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--teacher", "--student", "--data", "--output", "--max-steps", "--resume"):
        assert option in out
    assert f"{method} options" in out


# --------------------------------------------------------------------------- argparse-level errors


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (
            [
                "distill",
                "--method",
                "bogus",
                "--teacher",
                "t",
                "--student",
                "s",
                "--data",
                "d",
                "--output",
                "o",
            ],
            "invalid choice: 'bogus'",
        ),
        (["distill", "--method", "dse", "--teacher", "t"], "required"),
        (
            [
                "distill",
                "--teacher",
                "t",
                "--student",
                "s",
                "--data",
                "d",
                "--output",
                "o",
                "--max-steps",
                "x",
            ],
            "invalid int value: 'x'",
        ),
    ],
)
def test_usage_errors(argv, fragment):
    code, _, err = finish(embedkd(*argv), timeout=120)
    assert code == 2
    assert_one_error_line(err, fragment)


def test_unavailable_command_is_one_error(monkeypatch, capsys):
    monkeypatch.setitem(BUILTIN_COMMANDS, "ghost", "embedkd.cli.no_such_module")
    assert main(["ghost"]) == 2
    assert_one_error_line(capsys.readouterr().err, "command 'ghost' is unavailable")


def test_multiline_messages_become_one_line(monkeypatch, capsys):
    from embedkd.errors import EmbedkdError

    def fail(config):
        raise EmbedkdError("first part\nsecond part")

    import embedkd.methods.leaf as leaf

    monkeypatch.setattr(leaf, "run", fail)
    argv = ["distill", "--teacher", "t", "--student", "s", "--data", "d", "--output", "o"]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == "error: first part second part"
    with pytest.raises(EmbedkdError):
        main(["--debug", *argv])


# --------------------------------------------------------------------------- leaf bad input


def leaf_argv(teacher: str, student: str, data, output, *extra: str) -> list[str]:
    return [
        "distill", "--method", "leaf", "--teacher", str(teacher), "--student", str(student),
        "--data", *map(str, data if isinstance(data, list) else [data]), "--output", str(output),
        "--max-steps", "1", "--batch-size", "4", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def texts_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "texts.txt"
    path.write_text("\n".join(f"sentence number {i} about topic {i % 7}" for i in range(40)) + "\n")
    return path


@pytest.mark.e2e
def test_subprocess_missing_data_and_unknown_model(tmp_path, texts_file, minilm_path):
    # both at once: each pays the sentence-transformers import
    missing = embedkd(*leaf_argv(minilm_path, minilm_path, tmp_path / "missing.txt", tmp_path / "o1"))
    unknown = embedkd(*leaf_argv("acme-nonexistent/model-xyz", minilm_path, texts_file, tmp_path / "o2"))
    code, _, err = finish(missing)
    assert code == 2
    assert_one_error_line(err, "error: data path", "missing.txt does not exist")
    code, _, err = finish(unknown)
    assert code == 2
    assert_one_error_line(err, "error: model 'acme-nonexistent/model-xyz'", "offline")


@pytest.fixture
def run_cli(capsys):
    def run(argv: list[str]) -> str:
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, err
        return assert_one_error_line(err)

    return run


def test_empty_data_file(run_cli, tmp_path, minilm_path):
    (tmp_path / "empty.txt").write_text("")
    line = run_cli(leaf_argv(minilm_path, minilm_path, tmp_path / "empty.txt", tmp_path / "out"))
    assert "empty.txt is empty" in line
    (tmp_path / "blank.txt").write_text("\n \n")
    line = run_cli(leaf_argv(minilm_path, minilm_path, tmp_path / "blank.txt", tmp_path / "out"))
    assert "no non-empty text" in line


def test_unknown_student(run_cli, tmp_path, texts_file, minilm_path):
    line = run_cli(leaf_argv(minilm_path, "no-such-student-model", texts_file, tmp_path / "out"))
    assert "'no-such-student-model'" in line


def test_unwritable_output(run_cli, tmp_path, texts_file, minilm_path):
    (tmp_path / "file").write_text("x")
    line = run_cli(leaf_argv(minilm_path, minilm_path, texts_file, tmp_path / "file" / "out"))
    assert "file/out" in line


def test_resume_without_checkpoint(run_cli, tmp_path, texts_file, minilm_path):
    line = run_cli(leaf_argv(minilm_path, minilm_path, texts_file, tmp_path / "out", "--resume"))
    assert "--resume" in line and "no checkpoint" in line


def test_dim_mismatch_without_projection(run_cli, tmp_path, texts_file, tiny_st_factory):
    teacher, student = tiny_st_factory(hidden=32), tiny_st_factory(hidden=16)
    argv = leaf_argv(teacher, student, texts_file, tmp_path / "out", "--no-projection")
    line = run_cli([*argv, "--cache-dir", str(tmp_path / "cache")])
    assert "32" in line and "16" in line and "--no-projection" in line


def test_corrupt_cache_is_reported_and_kept(run_cli, tmp_path, texts_file, tiny_st_factory):
    from embedkd.cache import TeacherCache
    from embedkd.data import load_texts
    from embedkd.teachers import load_teacher

    teacher_path = tiny_st_factory(hidden=32)
    teacher = load_teacher(teacher_path)  # the same teacher id the CLI builds
    cache = TeacherCache.for_teacher(teacher, tmp_path / "cache", chunk_size=16)
    cache.encode(teacher, load_texts(texts_file))
    victim = sorted(cache.dir.glob("chunk-*.vecs.npy"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    files_before = sorted(p.name for p in cache.dir.iterdir())
    argv = leaf_argv(teacher_path, teacher_path, texts_file, tmp_path / "out")
    line = run_cli([*argv, "--cache-dir", str(tmp_path / "cache")])
    assert victim.name in line and "truncated or modified" in line
    assert sorted(p.name for p in cache.dir.iterdir()) == files_before  # no work thrown away
