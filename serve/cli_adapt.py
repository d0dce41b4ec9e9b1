"""``embedkd adapt``: align a query student with its teacher on a serving index's corpus."""

from __future__ import annotations

import argparse
import json

HELP = "adapt a query student to an index's corpus (pseudo-queries + logged queries); in-domain"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from embedkd.cli.options import add_config_arguments
    from serve.adapt import AdaptConfig

    add_config_arguments(parser, AdaptConfig, "adapt options")


def run(args: argparse.Namespace) -> int:
    from embedkd.cli.options import config_from_args
    from serve.adapt import AdaptConfig, adapt

    report = adapt(config_from_args(AdaptConfig, args))
    print(json.dumps({"output": args.output, "before": report["before"], "after": report["after"]}))
    return 0
