"""The ``embedkd`` command line: a thin shell that parses arguments and calls the library.

Each sub-command lives in its own module that exposes ``HELP`` (one line), ``add_arguments(parser)``
and ``run(args) -> int``. The library's own commands are listed here; other packages (``eval``,
``serve``) register theirs under the ``embedkd.commands`` entry-point group, so ``embedkd`` never names
their modules. Modules are imported lazily so that ``embedkd --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from embedkd.errors import EmbedkdError

logger = logging.getLogger("embedkd")

BUILTIN_COMMANDS: dict[str, str] = {
    "distill": "embedkd.cli.distill",
    "teacher": "embedkd.cli.teacher",
    "ontology": "embedkd.cli.ontology",
    "export": "embedkd.cli.export",
}
ENTRY_POINT_GROUP = "embedkd.commands"


def commands() -> dict[str, str]:
    """Every sub-command's module: the built-in ones, then those that installed packages register."""
    from importlib.metadata import entry_points

    found = dict(BUILTIN_COMMANDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


# Errors the user can fix; anything else is a bug and keeps its traceback.
USER_ERRORS = (EmbedkdError, FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError)


def _setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
    for noisy in ("httpx", "urllib3", "filelock", "datasets", "sentence_transformers.SentenceTransformer"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Build the top-level parser, loading only the module of the chosen sub-command."""
    parser = argparse.ArgumentParser(
        prog="embedkd", description="Distil embedding models that stay in the teacher's space."
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-v: debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks for errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    available = commands()
    chosen = next((a for a in argv if a in available), None)
    for name, module_name in available.items():
        if name != chosen:
            sub.add_parser(name, help=_help_of(module_name), add_help=False)
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EmbedkdError(f"command {name!r} is unavailable here ({exc})") from exc
        sp = sub.add_parser(name, help=module.HELP, description=module.HELP)
        sp.embedkd_argv = argv  # lets a command add options that depend on others (distill --method)
        module.add_arguments(sp)
        sp.set_defaults(_run=module.run)
    return parser


def _help_of(module_name: str) -> str:
    try:
        return importlib.import_module(module_name).HELP
    except ImportError:  # pragma: no cover - an optional command whose extra is not installed
        return "(unavailable)"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``embedkd`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or bool(os.environ.get("EMBEDKD_DEBUG"))
    try:
        parser = build_parser(argv)
    except USER_ERRORS as exc:
        if debug:
            raise
        return _report(exc)
    args = parser.parse_args(argv)
    _setup_logging(-1 if args.quiet else args.verbose)
    try:
        return int(args._run(args) or 0)
    except USER_ERRORS as exc:
        if debug:
            raise
        return _report(exc)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def _report(exc: BaseException) -> int:
    """Print a user error as exactly one ``error:`` line; exit code 2 (as argparse's own errors)."""
    message = " ".join(str(exc).split()) or type(exc).__name__
    print(f"error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
