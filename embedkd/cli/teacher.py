"""``embedkd teacher``: build teachers that do not exist as weights yet (e.g. a cross-encoder).

Each teacher kind is a sub-command in its own module (``HELP``, ``add_arguments``, ``run``), listed
in :data:`KINDS` and imported only when chosen, so ``embedkd --help`` stays cheap.
"""

from __future__ import annotations

import argparse
import importlib

HELP = "train a teacher model (cross-encoder for pair distillation)"

KINDS: dict[str, str] = {
    "cross-encoder": "embedkd.cli.teacher_cross_encoder",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="teacher_kind", metavar="KIND", required=True)
    for name, module_name in KINDS.items():
        module = importlib.import_module(module_name)
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(sp)
        sp.set_defaults(_teacher_run=module.run)


def run(args: argparse.Namespace) -> int:
    return int(args._teacher_run(args) or 0)
