"""Errors a stage reports to its operator as one clear line (the CLI prints no traceback)."""


class StageError(Exception):
    """A stage cannot complete; the message says what is wrong and where."""


class FileRefused(StageError):
    """A source file is structurally unusable: nothing of it is loaded."""


class DatabaseUnavailable(StageError):
    """The warehouse could not be reached after the configured retries."""
