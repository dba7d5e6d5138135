"""Errors a stage reports to its operator as one clear line (the CLI prints no traceback)."""


class StageError(Exception):
    """A stage cannot complete; the message says what is wrong and where."""


class FileRefused(StageError):
    """A source file is structurally unusable: nothing of it is loaded."""


class DatabaseUnavailable(StageError):
    """The warehouse could not be reached after the configured retries."""

    error_class = "transient"


class DatabaseRefused(StageError):
    """The server answered, and refused the login (wrong password, no such role or database, no
    pg_hba.conf entry): retrying cannot help, so it is not retried (exit 1, not 75)."""


class FileNotYetArrived(StageError):
    """The run date's source file is not in the landing folder yet, and its deadline has not passed:
    ``pick`` exits 76 and Argo retries it with backoff (``contribflow run`` polls with ``--wait``)."""

    error_class = "waiting"


class FileLate(StageError):
    """The run date's source file did not arrive before the deadline: "file for D is late"."""

    error_class = "late"
