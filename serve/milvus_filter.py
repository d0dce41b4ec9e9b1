"""Metadata equality filters as Milvus boolean expressions over the JSON ``metadata`` field.

``{"lang": "en", "year": [2023, 2024]}`` becomes
``(metadata["lang"] == "en") and (metadata["year"] == 2023 or metadata["year"] == 2024)``: the same
documents :func:`serve.store.matches` accepts. Field names and string values are written as string
literals with every character that could end or escape a literal escaped, so a value such as
``x" or id != "`` is compared as text and never read as expression syntax. Lists become ``or`` chains
because Milvus Lite's parser accepts ``in`` only on plain fields, not JSON paths.
"""

from __future__ import annotations

import math

from embedkd.errors import ConfigError
from serve.vector_store import Filters

# The escapes both Milvus parsers read (the server's grammar and Milvus Lite's tokenizer); a raw newline
# would end the literal, a raw backslash or quote would escape or close it.
_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def quote(text: str) -> str:
    """``text`` as a double-quoted Milvus string literal."""
    return '"' + text.translate(_ESCAPES) + '"'


def literal(value: object, field: str = "value") -> str:
    """A JSON scalar as a Milvus literal: string, integer, finite float or boolean.

    Raises:
        ConfigError: any other type (None, dict, NaN, ...), naming ``field``.
    """
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"filter {field!r}: {value!r} is not a finite number")
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    raise ConfigError(
        f"filter {field!r}: {value!r} ({type(value).__name__}) is not a string, number or boolean"
    )


def matches_nothing(filters: Filters | None) -> bool:
    """True when a field must equal one of an empty list of values: no document can match."""
    return bool(filters) and any(isinstance(v, (list, tuple)) and not v for v in filters.values())


def filter_expression(filters: Filters | None, json_field: str = "metadata") -> str:
    """The Milvus expression for ``filters`` on ``json_field`` ('' for no filter).

    Raises:
        ConfigError: a field name that is not a non-empty string, or a value :func:`literal` refuses.
    """
    clauses = []
    for name, wanted in (filters or {}).items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"filter field names must be non-empty strings, got {name!r}")
        key = f"{json_field}[{quote(name)}]"
        values = list(wanted) if isinstance(wanted, (list, tuple)) else [wanted]
        if not values:
            raise ConfigError(f"filter {name!r} has an empty list of values (check matches_nothing first)")
        clauses.append("(" + " or ".join(f"{key} == {literal(v, name)}" for v in values) + ")")
    return " and ".join(clauses)
