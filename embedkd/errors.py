"""The one exception type the CLI turns into a clear, single-line error."""

from __future__ import annotations


class EmbedkdError(Exception):
    """A user-facing error: bad input, missing model, corrupt cache, ...

    The CLI prints ``error: <message>`` and exits non-zero without a traceback, so the
    message must name the bad value and, where possible, what would be right.
    """


class ConfigError(EmbedkdError, ValueError):
    """An invalid configuration value."""
