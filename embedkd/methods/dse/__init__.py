"""Transitional: the method still exposes the legacy CLI hooks until it moves onto the shared config."""

from embedkd.methods.dse.api import add_arguments, run_from_args  # noqa: F401
