"""Domain errors shared by every DSS app, and how each edge shows them.

Plain Python (no Django import) so that the command-line clients and worker-node code can
raise and catch the same errors. Every error names *what* was wrong and *where*: a file, a
branch, an entry, or the column of a token in a selection.
"""

from __future__ import annotations


class DSSError(Exception):
    """Base of every error a user may see.

    ``code`` is a stable identifier for scripts (``bad_selection``, ``checksum_mismatch``);
    ``where`` is the place the problem was found (a file path, ``column 13``) or ``""``.
    ``exit_code`` is what a command-line client exits with when this error ends it.
    """

    code = "error"
    exit_code = 1

    def __init__(self, message: str, *, where: str = "", code: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        if code:
            self.code = code

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message

    def as_dict(self) -> dict:
        """The JSON body the REST API returns for this error (with HTTP 400)."""
        body = {"error": self.code, "detail": self.message}
        if self.where:
            body["where"] = self.where
        return body


class InvalidInput(DSSError):
    """The user gave something malformed: a bad name, a bad selection, a bad option."""

    code = "invalid"
    exit_code = 2


class NotFound(DSSError):
    code = "not_found"
    exit_code = 3


class Forbidden(DSSError):
    """The caller may not do this: a wrong, expired or reused credential, or a missing role."""

    code = "forbidden"
    exit_code = 9


class Conflict(DSSError):
    """The request contradicts what is already recorded (same name, other checksum)."""

    code = "conflict"
    exit_code = 4


class BadEventFile(DSSError):
    """An event file cannot be used: not ROOT, truncated, or without the expected tree."""

    code = "bad_event_file"
    exit_code = 5


class ChecksumMismatch(DSSError):
    code = "checksum_mismatch"
    exit_code = 6


class StorageError(DSSError):
    """A storage element refused or failed an operation. ``transient`` errors may be retried."""

    code = "storage_error"
    exit_code = 7

    def __init__(
        self, message: str, *, where: str = "", code: str | None = None, transient: bool = False
    ):
        super().__init__(message, where=where, code=code)
        self.transient = transient
