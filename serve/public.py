"""What a public answer may say about the service's files: names and digests, never file paths.

Models loaded from a local folder are known by their folder path (``/srv/models/leaf-v2``); a response
shows ``leaf-v2#3f2a9c1b`` instead: the folder's name and the first 8 hex digits of the SHA-256 of its
absolute path, so two folders with one name stay apart. Hub ids (``org/model``) and URLs are kept.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# An absolute (or ~, ./, ../) path that does not continue a word, a URL or another path; it ends at
# whitespace, quotes or the separators teacher ids use (``st:/x/y@seq256:w1234:norm``).
_PATH = re.compile(r"(?<![\w/.~-])(?:~|\.{1,2})?/(?!/)[^\s'\"`@:#,;()\[\]{}<>]+")
_PATH_LIKE = ("/", "~", "./", "../")


def _short(path: str) -> str:
    name = Path(path.rstrip("/")).name or "root"
    return f"{name}#{hashlib.sha256(path.encode()).hexdigest()[:8]}"


def redact_paths(text: str) -> str:
    """``text`` with every absolute path replaced by ``<name>#<digest>`` (see the module docstring)."""
    return _PATH.sub(lambda m: _short(str(Path(m.group(0)).expanduser())), text)


def public_model_name(name: str) -> str:
    """The name to show for a model: a local folder's ``<name>#<digest>``, anything else as given.

    A relative folder (``runs/leaf``) reads like a hub id, so it counts as a path when it exists here.
    """
    path = Path(name).expanduser()
    if name.startswith(_PATH_LIKE) or ("://" not in name and os.path.exists(path)):
        return _short(str(path.resolve()))
    return redact_paths(name)


def redact_all(value):
    """``value`` (dicts, lists, strings, numbers, as JSON holds them) with every string's paths redacted."""
    if isinstance(value, str):
        return redact_paths(value)
    if isinstance(value, dict):
        return {k: redact_all(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_all(v) for v in value]
    return value
