"""``embedkd distill --method dclip`` end to end on a tiny CLIP, and its bad-input errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from dclip_fixtures import make_flickr_folder, make_tiny_clip

from embedkd.cli import main


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "clip")


@pytest.fixture(scope="module")
def flickr(tmp_path_factory):
    return make_flickr_folder(tmp_path_factory.mktemp("data") / "flickr")


def _distill(clip, data, out, *extra):
    return main(
        [
            "distill",
            "--method",
            "dclip",
            "--teacher",
            str(clip),
            "--student",
            str(clip),
            "--data",
            str(data),
            "--output",
            str(out),
            "--batch-size",
            "4",
            "--max-steps",
            "2",
            "--teacher-steps",
            "2",
            "--cache-dir",
            str(out.parent / "regions"),
            "--detector",
            "grid:1,2",
            *extra,
        ]
    )


def _one_error_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for needle in needles:
        assert needle in err[0], err[0]


def test_distill_writes_a_clip_dir_and_a_reloadable_teacher(tmp_path, tiny_clip, flickr, capsys):
    from transformers import CLIPModel, CLIPProcessor

    from embedkd.methods.dclip.teacher import CrossModalTeacher

    out = tmp_path / "student"
    assert (
        _distill(
            tiny_clip, flickr, out, "--test-images", "2", "--unfreeze-every", "1", "--teacher-val-images", "2"
        )
        == 0
    )
    assert capsys.readouterr().out.strip().endswith(str(out))
    model, processor = CLIPModel.from_pretrained(out), CLIPProcessor.from_pretrained(out)
    enc = processor(text=["a red square"], images=[np.zeros((30, 40, 3), np.uint8)], return_tensors="pt")
    with torch.no_grad():
        assert model(**enc).image_embeds.shape == (1, 16)
    before = CLIPModel.from_pretrained(tiny_clip)
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before.state_dict()[n])]
    assert any(n.startswith("vision_model.") for n in changed) and any(
        n.startswith("text_model.") for n in changed
    )
    teacher = CrossModalTeacher.load(out / "teacher")
    assert teacher.teacher_config.dim == 16 and teacher.teacher_config.clip_model == str(tiny_clip)
    selection = json.loads((out / "teacher" / "teacher_selection.json").read_text())
    assert [h["step"] for h in selection["history"]] == [0, 2] and selection["validation_pairs"] == 4
    run = json.loads((out / "dclip_run.json").read_text())
    assert run["metrics"]["held_out_pairs"] == 4 and set(run["metrics"]["student"]) >= {"t2i_r5", "i2t_r5"}
    assert "t2i R@5" in (out / "README.md").read_text()
    assert not (out / "checkpoints").exists()

    # a saved teacher directory is reused as --teacher (no new teacher trained)
    again = tmp_path / "again"
    assert (
        main(
            [
                "distill",
                "--method",
                "dclip",
                "--teacher",
                str(out / "teacher"),
                "--student",
                str(out),
                "--data",
                str(flickr),
                "--output",
                str(again),
                "--batch-size",
                "4",
                "--max-steps",
                "1",
                "--cache-dir",
                str(tmp_path / "regions"),
                "--detector",
                "grid:1,2",
            ]
        )
        == 0
    )
    assert not (again / "teacher").exists() and (again / "model.safetensors").is_file()


def test_unreadable_image_is_one_error_line(tmp_path, tiny_clip, capsys):
    data = make_flickr_folder(tmp_path / "bad")
    (data / "images" / "blue_stripe.jpg").write_bytes(b"GIF89a broken")
    assert _distill(tiny_clip, data, tmp_path / "out") == 2
    _one_error_line(capsys, "cannot read image", "blue_stripe.jpg")


def test_captions_naming_missing_images_is_one_error_line(tmp_path, tiny_clip, capsys):
    data = make_flickr_folder(tmp_path / "missing")
    (data / "images" / "red_square.jpg").unlink()
    assert _distill(tiny_clip, data, tmp_path / "out") == 2
    _one_error_line(capsys, "missing", "red_square.jpg")


def test_image_only_checkpoint_is_one_error_line(tmp_path, tiny_clip, flickr, capsys):
    from transformers import CLIPModel, CLIPVisionModel

    vision_only = tmp_path / "vision-only"
    CLIPVisionModel(CLIPModel.from_pretrained(tiny_clip).config.vision_config).save_pretrained(vision_only)
    capsys.readouterr()  # drop the loading bars of the lines above
    assert _distill(vision_only, flickr, tmp_path / "out") == 2
    _one_error_line(capsys, "image-only", "clip_vision_model")


def test_unknown_detector_is_one_error_line(tmp_path, tiny_clip, flickr, capsys):
    assert _distill(tiny_clip, flickr, tmp_path / "out", "--detector", "sam") == 2
    _one_error_line(capsys, "unknown detector 'sam'")


def test_progressive_unfreeze_schedule(tiny_clip):
    from transformers import CLIPModel

    from embedkd.methods.dclip.train import ProgressiveUnfreeze

    model = CLIPModel.from_pretrained(tiny_clip)
    cb = ProgressiveUnfreeze(model, every=2)
    vision = model.vision_model
    trainable = lambda m: all(p.requires_grad for p in m.parameters())  # noqa: E731
    assert trainable(model.visual_projection) and trainable(vision.post_layernorm)
    assert not trainable(vision.encoder.layers[-1]) and not trainable(vision.embeddings)
    assert trainable(model.text_model)
    cb._apply(2)
    assert trainable(vision.encoder.layers[-1]) and not trainable(vision.embeddings)
    cb._apply(4)
    assert trainable(vision.embeddings)


def test_student_batches_carry_the_teacher_targets_of_their_own_pairs():
    from embedkd.methods.dclip.features import StudentData

    n_img, n_cap = 3, 6
    image_index = torch.tensor([0, 0, 1, 1, 2, 2])
    data = StudentData(
        pixel_values=torch.arange(n_img, dtype=torch.float32).view(n_img, 1, 1, 1).expand(n_img, 3, 2, 2),
        input_ids=torch.arange(n_cap)[:, None].repeat(1, 4),
        attention_mask=torch.ones(n_cap, 4, dtype=torch.long),
        image_index=image_index,
        teacher_image=torch.arange(n_cap, dtype=torch.float32)[:, None].repeat(1, 5),
        teacher_text=-torch.arange(n_cap, dtype=torch.float32)[:, None].repeat(1, 5),
    )
    batch = data.batch([5, 2, 3])
    assert batch["input_ids"][:, 0].tolist() == [5, 2, 3]
    assert batch["pixel_values"][:, 0, 0, 0].tolist() == [2.0, 1.0, 1.0]  # each caption's own image
    assert batch["groups"].tolist() == [2, 1, 1]
    assert batch["teacher_image"][:, 0].tolist() == [5.0, 2.0, 3.0]
    assert batch["teacher_text"][:, 0].tolist() == [-5.0, -2.0, -3.0]


def test_python_api_runs_dclip_with_the_student_as_frozen_clip(tmp_path, tiny_clip, flickr):
    import embedkd

    out = tmp_path / "api"
    # no --teacher: the teacher is built on the student's CLIP; no --max-steps: one epoch of 16 pairs;
    # --resume on an empty output starts both stages from scratch
    result = embedkd.distill(
        method="dclip",
        student=tiny_clip,
        data=flickr,
        output=out,
        epochs=1,
        batch_size=8,
        teacher_steps=2,
        cache_dir=tmp_path / "regions",
        detector="grid:1,2",
        resume=True,
    )
    assert result == out and (out / "model.safetensors").is_file()
    run = json.loads((out / "dclip_run.json").read_text())
    assert run["teacher_clip"] == str(tiny_clip) and run["train_pairs"] == 16
    assert run["config"]["method"] == "dclip" and run["config"]["max_steps"] == 2
    assert run["config"]["teacher"] == str(tiny_clip) and run["data"] == [str(flickr)]
    assert "student 2 (batch 8" in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--batch-size", "0"), "--batch-size must be >= 1, got 0"),
        (("--teacher-steps", "0"), "--teacher-steps must be >= 1, got 0"),
        (("--distill-weight", "-1"), "--distill-weight must be >= 0, got -1.0"),
        (("--teacher-temperature", "0"), "--teacher-temperature must be > 0, got 0.0"),
    ],
)
def test_bad_option_is_one_error_line_before_any_work(tmp_path, extra, message, capsys):
    argv = ["distill", "--method", "dclip", "--student", "clip", "--data", "d", "--output"]
    assert main([*argv, str(tmp_path / "out"), *extra]) == 2
    _one_error_line(capsys, message)
    assert not (tmp_path / "out").exists()
