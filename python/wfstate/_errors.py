"""The exceptions of wfstate: one base, one class per kind of failure.

Each exception carries the message the ``wfstate`` command prints for the
same failure, its ``exit_code`` (the command's exit code for it) and its
``kind`` (the ``kind`` of the command's ``--json`` error object).
"""

from __future__ import annotations

__all__ = [
    "Error",
    "NotFoundError",
    "InvalidInputError",
    "TooLargeError",
    "IntegrityError",
    "ConflictError",
    "LockTimeoutError",
    "LockMisuseError",
    "StorageError",
    "StoreWarning",
]


class Error(Exception):
    """Base of every wfstate exception."""

    exit_code: int = 1
    kind: str = "error"

    def __init__(self, message: str, kind: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind
        if exit_code is not None:
            self.exit_code = exit_code

    def __reduce__(self):  # exceptions cross process boundaries (multiprocessing)
        return (type(self), (self.message, self.kind, self.exit_code))


class NotFoundError(Error, LookupError):
    """A workflow, checkpoint, lock or store that does not exist (exit 1)."""

    exit_code = 1
    kind = "not_found"


class InvalidInputError(Error, ValueError):
    """Input refused before anything was written: a bad name, a value JSON
    cannot hold, an edit that cannot apply (exit 2)."""

    exit_code = 2
    kind = "invalid_input"


class TooLargeError(InvalidInputError):
    """A document over the store's size limit (exit 1, as the command)."""

    exit_code = 1
    kind = "too_large"


class IntegrityError(Error):
    """Stored data failed verification: corrupt, truncated, tampered or of
    an unsupported version. It is left untouched (exit 3)."""

    exit_code = 3
    kind = "integrity"


class ConflictError(Error):
    """``expect_generation`` did not match the stored generation (exit 4)."""

    exit_code = 4
    kind = "conflict"


class LockTimeoutError(Error, TimeoutError):
    """A lock was not acquired within the timeout (exit 5)."""

    exit_code = 5
    kind = "lock_timeout"


class LockMisuseError(Error):
    """A lock request that could never succeed, such as taking exclusively a
    lock this thread holds shared (exit 1)."""

    exit_code = 1
    kind = "lock_misuse"


class StorageError(Error):
    """The disk or the database failed (exit 1)."""

    exit_code = 1
    kind = "io"


class StoreWarning(UserWarning):
    """A change was made and is durable, but a housekeeping step after it
    failed (compacting a log on a full disk, copying an audit entry); the
    next write, the next open or ``health(repair=True)`` completes it. The
    ``wfstate`` command prints the same text as ``wfstate: warning:``."""
