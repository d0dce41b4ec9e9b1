"""``embedkd distill``: train a student that reproduces a teacher (one of the methods)."""

from __future__ import annotations

import argparse
import sys

HELP = "distil a teacher into a small student (--method leaf|dse|dclip|ontology)"


def add_common_arguments(
    parser: argparse.ArgumentParser, *, required: bool = True, default_epochs: float = 1.0
) -> None:
    """Options every method shares: models, data, output and the trainer's knobs.

    Args:
        parser: the ``distill`` parser.
        required: whether models, data and output must be given (LEAF has offline defaults for all four).
        default_epochs: the method's default number of epochs.
    """
    g = parser.add_argument_group("models, data and output")
    default = " (default: %(default)s)" if not required else ""
    g.add_argument(
        "--teacher",
        required=required,
        default=None if required else "sentence-transformers/all-mpnet-base-v2",
        help="teacher model: local dir, HF id, offline package id, or method-specific spec" + default,
    )
    g.add_argument(
        "--student",
        required=required,
        default=None if required else "sentence-transformers/all-MiniLM-L6-v2",
        help="student model: local dir, HF id or offline package id" + default,
    )
    g.add_argument(
        "--data",
        nargs="+",
        required=required,
        default=None if required else ["stdlib-docs"],
        help="training data file(s) or folder(s)" + default,
    )
    g.add_argument(
        "--output",
        required=required,
        default=None if required else "runs/leaf-default",
        help="output directory for the trained student" + default,
    )
    g.add_argument("--max-samples", type=int, default=None, help="use at most this many training examples")
    g.add_argument(
        "--cache-dir", default=None, help="teacher cache directory (default: ~/.cache/embedkd/teacher)"
    )
    t = parser.add_argument_group("training")
    t.add_argument(
        "--epochs", type=float, default=default_epochs, help="training epochs (default %(default)s)"
    )
    t.add_argument(
        "--max-steps", type=int, default=-1, help="stop after this many optimizer steps (overrides --epochs)"
    )
    t.add_argument("--batch-size", type=int, default=32, help="per-device batch size (default 32)")
    t.add_argument("--lr", type=float, default=None, help="learning rate (method default if unset)")
    t.add_argument("--max-seq-length", type=int, default=None, help="student max sequence length in tokens")
    t.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    t.add_argument("--resume", action="store_true", help="resume from the last checkpoint in --output")


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
    if hasattr(module, "CONFIG"):
        from embedkd.cli.options import add_config_arguments

        add_config_arguments(parser, module.CONFIG, f"{method} options")
        return
    add_common_arguments(parser, required=True)  # legacy: a method not yet on the shared config
    module.add_arguments(parser.add_argument_group(f"{method} options"))


def _method_in_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--method" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--method="):
            return arg.split("=", 1)[1]
    return None


def run(args: argparse.Namespace) -> int:
    from embedkd.methods import get_method

    module = get_method(args.method)
    if hasattr(module, "CONFIG"):
        from embedkd.cli.options import config_from_args

        output = module.run(config_from_args(module.CONFIG, args))
    else:
        output = module.run_from_args(args)
    print(output)
    return 0
