"""``embedkd distill``: train a student that reproduces a teacher (one of the methods)."""

from __future__ import annotations

import argparse
import sys

HELP = "distil a teacher into a small student (--method leaf|dse|dclip|ontology)"

# The options of each method that name a model folder when given as a local path: checked before
# the run starts, so a bad folder fails at once. dclip's --teacher may also be a saved DCLIP teacher
# folder and ontology's is not a model, so their loaders check those.
MODEL_OPTIONS = {"leaf": ("teacher", "student"), "dse": ("teacher", "student")}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from embedkd.methods import METHODS, get_method

    parser.add_argument(
        "--method", default="leaf", choices=list(METHODS), help="distillation method (default leaf)"
    )
    method = _method_in_argv(getattr(parser, "embedkd_argv", sys.argv[1:])) or "leaf"
    if method not in METHODS:
        return  # argparse's choices check reports the bad --method as one clear error
    try:
        module = get_method(method)
    except ImportError as exc:
        parser.error(f"--method {method} is unavailable here ({exc})")
    from embedkd.cli.options import add_config_arguments

    add_config_arguments(parser, module.CONFIG, f"{method} options")


def _method_in_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--method="):
            return arg.split("=", 1)[1]
    return None


def run(args: argparse.Namespace) -> int:
    from embedkd.cli.options import config_from_args
    from embedkd.encoders import check_model_arg
    from embedkd.methods import get_method

    module = get_method(args.method)
    config = config_from_args(module.CONFIG, args)
    for name in MODEL_OPTIONS.get(args.method, ("student",)):
        check_model_arg(getattr(config, name), f"--{name}")
    output = module.run(config)
    print(output)
    return 0
