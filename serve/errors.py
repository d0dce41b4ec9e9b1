"""Errors of the service's state and storage, each with the HTTP status and error code it answers with.

The store and the service raise these; :mod:`serve.app` maps every one to a JSON answer
``{"error": <code>, "detail": <message>}`` with its status, and the CLI prints ``error: <message>``.
"""

from __future__ import annotations

from embedkd.errors import EmbedkdError


class ServiceStateError(EmbedkdError):
    """The index folder's parts disagree (snapshot, write-ahead records, document store, manifest).

    At start-up the service refuses to start; found while serving (a damaged row), the request answers a
    JSON 500 ``state_corrupt``. The message says what is wrong and how to recover.
    """

    status = 500
    code = "state_corrupt"


class StorageFullError(EmbedkdError):
    """A write could not be made durable because the disk is full (nothing was acknowledged)."""

    status = 507
    code = "disk_full"


class StorageIOError(EmbedkdError):
    """A write could not be made durable because of another I/O failure (nothing was acknowledged)."""

    status = 503
    code = "io_error"


class LimitError(EmbedkdError):
    """A request exceeds one of the service's limits; ``code`` names which."""

    status = 413

    def __init__(self, message: str, code: str, status: int = 413) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
