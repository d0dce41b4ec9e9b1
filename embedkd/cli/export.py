"""``embedkd export``: a model as one ONNX / OpenVINO graph (fp32, int8) for fast queries, checked.

Example::

    embedkd export runs/leaf-minilm --format onnx --quantize int8 --output runs/leaf-minilm-onnx
"""

from __future__ import annotations

import argparse
import json

HELP = "export a model as one ONNX/OpenVINO graph (optionally int8) for fast queries, checked against it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from embedkd.cli.options import add_config_arguments
    from embedkd.export import ExportConfig

    parser.add_argument("model", help="the model to export: local dir, Hugging Face id or offline package id")
    add_config_arguments(parser, ExportConfig, "export options")


def run(args: argparse.Namespace) -> int:
    from embedkd.cli.options import config_from_args
    from embedkd.encoders import check_model_arg
    from embedkd.export import ExportConfig, run_export

    config = config_from_args(ExportConfig, args)
    check_model_arg(config.model, "model")
    check_model_arg(config.teacher, "--teacher")
    report = run_export(config)
    info = report.info
    summary = {
        "output": str(report.output),
        "files": info["files"][info["format"]],
        "cosine_to_float": info["cosine_to_float_by_file"],
        "heldout_texts": info["heldout_texts"],
        **({"cosine_to_teacher": info["cosine_to_teacher"]} if "cosine_to_teacher" in info else {}),
    }
    print(json.dumps(summary, indent=2))
    return 0
