"""Errors a stage reports to its operator as one clear line (the CLI prints no traceback)."""


class StageError(Exception):
    """A stage cannot complete; the message says what is wrong and where."""


class UsageError(StageError):
    """The command was asked something it cannot answer as put (an unknown publication, flags
    that exclude each other): exit EXIT_USAGE, as argparse does for a malformed command line."""


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


class FileNotYetComplete(FileNotYetArrived):
    """The run date's file is there but not complete yet (no control file or manifest, or still
    changing within the stability window): waited for exactly as a file that has not arrived."""


class FileChanged(StageError):
    """The source file changed while ingest read it, or lost its completion signal after pick: nothing
    is committed, and the step is retried (exit 75) once the file is complete again."""

    error_class = "transient"


# The CLI's exit codes, which Argo's retry strategies (workflows/steps.py) are written against.
EXIT_FAILED = 1
EXIT_USAGE = 2
"""A command line that cannot be answered as put (argparse's own usage errors exit 2 too)."""
EXIT_TRANSIENT = 75
"""EX_TEMPFAIL: a failure a retry may pass: the database could not be reached or the connection was
lost, a SQLSTATE of db.TRANSIENT_SQLSTATES (server shutting down or starting, too many connections,
a serialization failure or deadlock), or the source file changed while ingest read it. The only
failure Argo's retryStrategy retries (with pick's 76); a data-quality failure, a statement timeout,
any other database error, and a login the server refuses, exit 1 and are never retried."""
EXIT_LATE = 76
"""The run date's file has not arrived yet and its deadline has not passed: Argo retries pick with
backoff. After the deadline pick exits 1, "file for D is late"."""
