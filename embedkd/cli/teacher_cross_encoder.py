"""``embedkd teacher cross-encoder``: train a cross-encoder teacher on labelled sentence pairs.

The options are generated from
:class:`~embedkd.methods.dse.teacher_training.CrossEncoderTrainConfig`, where each is declared once.
"""

from __future__ import annotations

import argparse

HELP = "train a cross-encoder (regression|binary|nli) from any HF/ST model on labelled pairs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from embedkd.cli.options import add_config_arguments
    from embedkd.methods.dse.teacher_training import CrossEncoderTrainConfig

    add_config_arguments(parser, CrossEncoderTrainConfig, "cross-encoder options")


def run(args: argparse.Namespace) -> int:
    from embedkd.cli.options import config_from_args
    from embedkd.encoders import check_model_arg
    from embedkd.methods.dse.teacher_training import CrossEncoderTrainConfig, train_teacher

    config = config_from_args(CrossEncoderTrainConfig, args)
    check_model_arg(config.init, "--init")
    print(train_teacher(config))
    return 0
