"""Bad inputs to every command end in one ``error:`` line naming the bad value, exit 2, no traceback.

Model folders are checked in one place (:func:`embedkd.encoders.check_model_dir`) before anything is
loaded: a missing path, an empty folder, a training output holding only ``checkpoints/``, a file, a
truncated ``config.json``, a folder that is not a model, cut weights. Data files that are not UTF-8
text or not JSON are one error line too.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from embedkd.cli import main
from embedkd.encoders import check_model_arg, check_model_dir
from embedkd.errors import EmbedkdError

REPO = Path(__file__).resolve().parents[1]

# name -> a fragment the error line must hold (besides the path itself)
BAD_MODELS = {
    "missing": "does not exist",
    "empty": "is not a model directory: it is empty",
    "checkpoints_only": "holds training checkpoints but no model yet",
    "file": "is a file; expected a model directory",
    "corrupt_config": "config.json is unreadable or truncated",
    "non_model": "is not a model directory",
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory, tiny_st_factory) -> dict[str, Path]:
    """Bad model folders, bad data files, and a few good inputs the commands need beside them."""
    root = tmp_path_factory.mktemp("bad-inputs")
    tiny = Path(tiny_st_factory())
    paths = {name: root / name for name in BAD_MODELS}
    paths["empty"].mkdir()
    (paths["checkpoints_only"] / "checkpoints" / "checkpoint-5").mkdir(parents=True)
    (paths["checkpoints_only"] / "checkpoints" / "checkpoint-5" / "trainer_state.json").write_text("{}")
    paths["file"].write_text("not a model\n")
    shutil.copytree(tiny, paths["corrupt_config"])
    config = (tiny / "config.json").read_text()
    (paths["corrupt_config"] / "config.json").write_text(config[: len(config) // 3])
    paths["non_model"].mkdir()
    (paths["non_model"] / "README.md").write_text("notes\n")
    (paths["non_model"] / "data.csv").write_text("a,b\n1,2\n")
    extra = {
        "tiny": tiny,
        "texts": root / "texts.tsv",
        "pairs": root / "pairs.tsv",
        "garbled": root / "garbled.jsonl",
        "beir": root / "beir",
    }
    extra["texts"].write_text("text\n" + "".join(f"sentence {i} about cells\n" for i in range(20)))
    extra["pairs"].write_text("sentence1\tsentence2\tlabel\n" + "a cat\ta dog\t1\n" * 10)
    extra["garbled"].write_bytes(b"\x00\x01garbled\xff\xfe\n{{{\n")
    _write_beir(extra["beir"])
    return {**paths, **extra}


def _write_beir(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True)
    docs = "".join(
        json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i}"}) + "\n" for i in range(4)
    )
    (folder / "corpus.jsonl").write_text(docs)
    (folder / "queries.jsonl").write_text(json.dumps({"_id": "q0", "text": "document 0"}) + "\n")
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\n")


def one_error_line(err: str) -> str:
    """Exactly one ``error:`` line and no traceback; returns that line."""
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    return lines[0]


def run_cli(argv: list[str], capsys) -> str:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    return one_error_line(err)


# Each command, with the bad model in the slot this command reads it from.
COMMANDS = {
    "eval --model": lambda m, b: ["eval", "--model", m, "--tasks", f"beir:{b['beir']}", "--output", str(b["beir"].parent / "e")],
    "eval --teacher": lambda m, b: [
        "eval", "--model", str(b["tiny"]), "--teacher", m, "--mode", "teacher",
        "--tasks", f"beir:{b['beir']}", "--output", str(b["beir"].parent / "e"),
    ],
    "distill leaf --student": lambda m, b: [
        "distill", "--method", "leaf", "--teacher", str(b["tiny"]), "--student", m,
        "--data", str(b["texts"]), "--output", str(b["beir"].parent / "o"),
    ],
    "distill leaf --teacher": lambda m, b: [
        "distill", "--method", "leaf", "--teacher", m, "--student", str(b["tiny"]),
        "--data", str(b["texts"]), "--output", str(b["beir"].parent / "o"),
    ],
    "distill dse --teacher": lambda m, b: [
        "distill", "--method", "dse", "--task", "binary", "--teacher", m, "--student", str(b["tiny"]),
        "--data", str(b["pairs"]), "--output", str(b["beir"].parent / "o"),
    ],
    "distill ontology --student": lambda m, b: [
        "distill", "--method", "ontology", "--ontologies", "chest-xray", "--student", m,
        "--data", str(b["texts"]), "--output", str(b["beir"].parent / "o"),
    ],
    "export MODEL": lambda m, b: ["export", m, "--output", str(b["beir"].parent / "x")],
    "teacher cross-encoder --init": lambda m, b: [
        "teacher", "cross-encoder", "--init", m, "--pairs", str(b["pairs"]), "--task", "binary",
        "--output", str(b["beir"].parent / "ce"),
    ],
    "index --teacher": lambda m, b: [
        "index", "--teacher", m, "--corpus", str(b["beir"]), "--index-dir", str(b["beir"].parent / "i"),
    ],
}  # fmt: skip


@pytest.mark.parametrize("kind", list(BAD_MODELS))
@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_reports_a_bad_model_folder_in_one_line(command, kind, bad, capsys):
    line = run_cli(COMMANDS[command](str(bad[kind]), bad), capsys)
    assert str(bad[kind]) in line, line
    assert BAD_MODELS[kind] in line, line


def test_checkpoints_only_names_a_usable_checkpoint(bad, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(bad["tiny"], run / "checkpoints" / "checkpoint-12")
    (run / "checkpoints" / "checkpoint-3").mkdir()
    with pytest.raises(EmbedkdError, match="pass a checkpoint instead, e.g. .*checkpoint-12"):
        check_model_dir(run, "--model")


def _copy(bad, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bad["tiny"], tmp_path / "model"))


@pytest.mark.parametrize(
    ("damage", "fragment"),
    [
        (lambda d: (d / "config.json").write_text(json.dumps({"hidden_size": 32})), "has no 'model_type'"),
        (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "nonsense"})), "does not know"),
        (lambda d: (d / "config.json").write_text("[1, 2]"), "holds a list, expected a JSON dict"),
        (lambda d: (d / "modules.json").write_text("{not json"), "modules.json is unreadable or truncated"),
        (lambda d: (d / "model.safetensors").unlink(), "has a config.json but no weights"),
        (lambda d: os.truncate(d / "model.safetensors", (d / "model.safetensors").stat().st_size // 2), "truncated"),
        (lambda d: os.truncate(d / "model.safetensors", 4), "its header is cut"),
    ],
    ids=["no-model-type", "unknown-model-type", "config-not-object", "modules-garbled", "no-weights",
         "weights-cut", "weights-header-cut"],
)  # fmt: skip
def test_check_model_dir_names_what_is_wrong(damage, fragment, bad, tmp_path):
    folder = _copy(bad, tmp_path)
    damage(folder)
    with pytest.raises(EmbedkdError, match=fragment) as info:
        check_model_dir(folder, "--student")
    assert str(folder) in str(info.value) and "--student" in str(info.value)


def test_good_model_folders_pass(bad, minilm_path):
    # the packaged MiniLM lists a Normalize module whose folder it does not ship: still loadable
    for folder in (bad["tiny"], Path(bad["tiny"]).parent / "hf", minilm_path):
        assert check_model_dir(folder, "model") == Path(folder)
    for name in ("sentence-transformers/all-MiniLM-L6-v2", "teacher", "http://host/v1#m", "vectors.npy"):
        check_model_arg(name, "--teacher")  # ids, URLs and vector files are left to their loaders


def test_library_loaders_check_the_folder(bad):
    from embedkd.students import load_student
    from embedkd.teachers import SentenceTransformerTeacher
    from eval.encoders import load_student_encoder

    for load in (SentenceTransformerTeacher, load_student, load_student_encoder):
        with pytest.raises(EmbedkdError, match="holds training checkpoints"):
            load(str(bad["checkpoints_only"]))


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("beir:{texts}", "is a file; expected a folder holding corpus.jsonl"),
        ("beir:{garbled_beir}", "is not UTF-8 text"),
        ("sts:{garbled}", "is not UTF-8 text"),
        ("sts:{bad_json}", "is not valid JSON"),
    ],
)
def test_eval_reports_bad_task_data_in_one_line(spec, fragment, bad, tmp_path, capsys):
    garbled_beir = tmp_path / "gb"
    _write_beir(garbled_beir)
    (garbled_beir / "corpus.jsonl").write_bytes(b'{"_id": "d0", "text": "\xff\xfe"}\n')
    bad_json = tmp_path / "pairs.jsonl"
    bad_json.write_text('{"sentence1": "a", "sentence2": "b", "score": 1\n')
    spec = spec.format(
        texts=bad["texts"], garbled=bad["garbled"], garbled_beir=garbled_beir, bad_json=bad_json
    )
    argv = ["eval", "--model", str(bad["tiny"]), "--tasks", spec, "--output", str(tmp_path / "e")]
    line = run_cli([*argv, "--no-fidelity", "--no-plots"], capsys)
    assert fragment in line, line


@pytest.mark.e2e
def test_eval_on_a_training_output_with_only_checkpoints_is_one_error_line(bad, tmp_path):
    """The reported case, through the real console entry point (``python -m embedkd``)."""
    cmd = [sys.executable, "-m", "embedkd", "eval", "--model", str(bad["checkpoints_only"])]
    cmd += ["--tasks", f"beir:{bad['beir']}", "--output", str(tmp_path / "e")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done.stderr)
    assert "holds training checkpoints but no model yet" in line and str(bad["checkpoints_only"]) in line
