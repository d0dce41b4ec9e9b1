"""``embedkd distill`` options generated from a method's config dataclass (declared once, there)."""

from __future__ import annotations

import argparse
import dataclasses
import typing
from enum import Enum
from typing import Any

from embedkd.config import field_types, flag_of, is_tuple_field, parse_int_list


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, method_title: str) -> None:
    """Add one option per CLI field of the config class ``cls``, grouped as the fields say.

    Options default to "not given" (``argparse.SUPPRESS``) so that the dataclass's own defaults apply:
    a default lives in one place.
    """
    hints = field_types(cls)
    groups: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.metadata.get("cli", True):
            continue
        title = f.metadata.get("group") or method_title
        group = groups.get(title) or groups.setdefault(title, parser.add_argument_group(title))
        group.add_argument(
            flag_of(f), dest=f.name, default=argparse.SUPPRESS, help=_help(f), **_kind(f, hints[f.name])
        )


def config_from_args(cls: type, args: argparse.Namespace) -> Any:
    """Build (and so validate) a ``cls`` from the options that were given on the command line."""
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**given)


def _help(f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    default = f.default
    if default is dataclasses.MISSING or default in (None, False, (), ""):
        return text
    if f.metadata.get("flag", "") and str(f.metadata["flag"]).startswith("--no-"):
        return text
    if isinstance(default, tuple):
        default = ",".join(map(str, default))
    elif isinstance(default, Enum):
        default = default.value
    return f"{text} (default: {str(default).replace('%', '%%')})"


def _kind(f: dataclasses.Field, annotation: Any) -> dict[str, Any]:
    """argparse keywords for a field's type: flags for bools, lists for tuples, choices for enums."""
    if annotation is bool:
        return {"action": "store_false" if f.default is True else "store_true"}
    choices = f.metadata.get("choices")
    if is_tuple_field(annotation):
        inner = _inner(annotation)
        if inner is int:
            return {"type": _int_list, "metavar": "I,J,..."}
        return {"type": _str_list, "nargs": "+", "action": _Extend}
    base = _scalar(annotation)
    if isinstance(base, type) and issubclass(base, Enum):
        return {"type": str, "choices": [m.value for m in base]}
    return {"type": base, **({"choices": list(choices)} if choices else {})}


def _scalar(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if args else annotation


def _inner(annotation: Any) -> Any:
    for a in (annotation, *typing.get_args(annotation)):
        if typing.get_origin(a) is tuple:
            return typing.get_args(a)[0]
    return str


def _int_list(value: str) -> tuple[int, ...]:
    try:
        return parse_int_list(value) or ()
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _str_list(value: str) -> list[str]:
    return [v for v in value.split(",") if v] if "," in value and "://" not in value else [value]


class _Extend(argparse.Action):
    """``--ontologies a,b c`` → ``("a", "b", "c")``: space- and comma-separated values become one tuple."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, tuple(v for chunk in values for v in chunk))
