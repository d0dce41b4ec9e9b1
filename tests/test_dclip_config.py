"""DCLIP's config: today's defaults, validation in one place, and the per-stage trainer settings."""

from __future__ import annotations

import pytest

from embedkd.errors import ConfigError
from embedkd.methods import make_config
from embedkd.methods.dclip.config import DCLIPConfig, parse_detector

REQUIRED = {"student": "clip", "data": ("d",), "output": "o"}


def test_defaults_and_the_teacher_defaulting_to_the_student():
    config = make_config("dclip", **REQUIRED)
    assert isinstance(config, DCLIPConfig) and config.method == "dclip"
    assert config.teacher == "clip"
    assert (config.lr, config.temperature, config.distill_weight, config.unfreeze_every) == (
        1e-5,
        0.05,
        1.0,
        0,
    )
    assert (config.teacher_steps, config.teacher_lr, config.teacher_heads) == (300, 1e-3, 4)
    assert config.teacher_batch == config.batch_size == 32 and config.teacher_temperature is None
    assert (config.detector, config.test_images, config.teacher_val_images) == ("grid", 0, 0)
    assert (config.max_steps, config.epochs, config.warmup_ratio) == (-1, 1.0, 0.1)
    assert DCLIPConfig(teacher="frozen", **REQUIRED).teacher == "frozen"


@pytest.mark.parametrize(
    "options, message",
    [
        ({"batch_size": 0}, "--batch-size must be >= 1, got 0"),
        ({"teacher_steps": 0}, "--teacher-steps must be >= 1, got 0"),
        ({"teacher_heads": 0}, "--teacher-heads must be >= 1, got 0"),
        ({"teacher_eval_steps": 0}, "--teacher-eval-steps must be >= 1, got 0"),
        ({"teacher_batch_size": 0}, "--teacher-batch-size must be > 0, got 0"),
        ({"teacher_temperature": -1.0}, "--teacher-temperature must be > 0, got -1.0"),
        ({"temperature": 0.0}, "--temperature must be > 0, got 0.0"),
        ({"teacher_lr": 0.0}, "--teacher-lr must be > 0, got 0.0"),
        ({"distill_weight": -0.5}, "--distill-weight must be >= 0, got -0.5"),
        ({"unfreeze_every": -1}, "--unfreeze-every must be >= 0, got -1"),
        ({"test_images": -1.0}, "--test-images must be >= 0, got -1.0"),
        ({"teacher_val_images": -2.0}, "--teacher-val-images must be >= 0, got -2.0"),
        ({"detector": "sam"}, "--detector: unknown detector 'sam'"),
        ({"detector": "grid:a"}, "--detector: bad grid 'grid:a'"),
        ({"detector": "grid:0,2"}, "--detector: grid scales must be positive integers, got 'grid:0,2'"),
        ({"warmup_ratio": 1.5}, "--warmup-ratio must be in [0, 1), got 1.5"),
        ({"student": ""}, "--student is required"),
    ],
)
def test_validation_names_the_flag_and_the_value(options, message):
    with pytest.raises(ConfigError) as info:
        DCLIPConfig(**{**REQUIRED, **options})
    assert message in str(info.value)


def test_parse_detector():
    assert parse_detector("grid") == ("grid", (1, 2, 3))
    assert parse_detector("grid:1,4") == ("grid", (1, 4))
    assert parse_detector("yolo:/w.pt") == ("yolo", "/w.pt")
    with pytest.raises(ConfigError, match="unknown detector 'yolo'"):
        parse_detector("yolo")


def test_each_stage_takes_its_trainer_settings_from_the_one_config(tmp_path):
    from embedkd.methods.dclip.train import training_arguments

    config = DCLIPConfig(**REQUIRED, batch_size=4, epochs=2, teacher_batch_size=8, seed=7)
    teacher = training_arguments(config, tmp_path / "t", teacher=True, n_pairs=10)
    assert (teacher.max_steps, teacher.per_device_train_batch_size, teacher.learning_rate) == (300, 8, 1e-3)
    assert teacher.save_steps == 75  # a quarter of the stage
    student = training_arguments(config, tmp_path / "s", teacher=False, n_pairs=10)
    assert (student.max_steps, student.per_device_train_batch_size, student.learning_rate) == (5, 4, 1e-5)
    assert student.save_steps == 50  # never more often than every 50 steps by default
    for args in (teacher, student):
        assert args.lr_scheduler_type.value == "cosine" and args.weight_decay == 0.01
        assert args.dataloader_drop_last and not args.remove_unused_columns
        assert args.seed == 7 and args.warmup_steps == 0.1 and args.report_to == []  # "none": no integration
    fixed = DCLIPConfig(**REQUIRED, max_steps=1000, save_steps=20)
    args = training_arguments(fixed, tmp_path / "f", teacher=False, n_pairs=10)
    assert (args.max_steps, args.save_steps) == (1000, 20)
