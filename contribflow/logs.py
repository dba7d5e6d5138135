"""Logging for every stage: the standard ``logging`` module, text by default, JSON on request.

``CONTRIBFLOW_LOG_FORMAT=json`` writes one JSON object per line to stderr (timestamp, level, logger,
message, run_id, step, and any structured fields a record carries): what Loki, Elasticsearch or
CloudWatch parse without a custom pattern. ``CONTRIBFLOW_LOG_LEVEL`` (default INFO) sets the level.

In text mode a record is printed as its message alone, so the CLI's lines read as they always did;
the step lifecycle records (``step started``/``step finished``) are JSON-only, because in text mode
the CLI's own summary line (stdout) or refusal line (stderr) already says how the step ended.

No secret reaches a record: the values of the pseudonymisation key and the database password (PGPASSWORD,
or the one inside CONTRIBFLOW_DSN), when set, are replaced by ``***`` in every message and field before
it is written.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
from collections.abc import Mapping

FORMATS = ("text", "json")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOGGER = "contribflow"
_SECRET_VARS = ("CONTRIBFLOW_PSEUDONYM_KEY", "PGPASSWORD")
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
LIFECYCLE = "lifecycle"
"""An ``extra`` flag on the step-lifecycle records (JSON only, see above)."""


def fields(values: dict) -> dict:
    """``values`` usable as a record's ``extra`` (names a LogRecord already has are prefixed)."""
    return {(f"field_{k}" if k in _STANDARD else k): v for k, v in values.items()}


def get(name: str = "") -> logging.Logger:
    return logging.getLogger(f"{LOGGER}.{name}" if name else LOGGER)


class _Context(logging.Filter):
    """Adds run_id and step to every record, and masks secrets."""

    def __init__(self, run_id: str, step: str, secrets: list[str]) -> None:
        super().__init__()
        self.run_id, self.step, self.secrets = run_id, step, secrets

    def _mask(self, value):
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, "***")
        return value

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = self._mask(record.getMessage())
        record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD:
                setattr(record, key, self._mask(value))
        if not hasattr(record, "run_id"):
            record.run_id = self.run_id
        if not hasattr(record, "step"):
            record.step = self.step
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out = {
            "timestamp": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "run_id": getattr(record, "run_id", None),
            "step": getattr(record, "step", None),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in out and key != LIFECYCLE:
                out[key] = value if isinstance(value, (int, float, str, bool, type(None))) else str(value)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


class _TextOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, LIFECYCLE, False)


_ACTIVE = "text"


def active_format() -> str:
    """The format setup() configured (text until it ran)."""
    return _ACTIVE


def log_format(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    value = (env.get("CONTRIBFLOW_LOG_FORMAT") or "text").strip().lower()
    if value not in FORMATS:
        raise ValueError(f"CONTRIBFLOW_LOG_FORMAT={value!r} must be one of {', '.join(FORMATS)}")
    return value


def _dsn_password(env: Mapping[str, str]) -> list[str]:
    """The password inside CONTRIBFLOW_DSN, if it holds one: masked like PGPASSWORD."""
    if not env.get("CONTRIBFLOW_DSN"):
        return []
    from psycopg.conninfo import conninfo_to_dict

    try:
        password = conninfo_to_dict(env["CONTRIBFLOW_DSN"]).get("password")
    except Exception:  # an unparsable DSN is refused by settings.py, without repeating it
        return []
    return [str(password)] if password else []


def setup(step: str, run_id: str, environ: Mapping[str, str] | None = None) -> str:
    """Configure the ``contribflow`` logger for this process; returns the format in force."""
    global _ACTIVE
    env = os.environ if environ is None else environ
    fmt = log_format(env)
    level = (env.get("CONTRIBFLOW_LOG_LEVEL") or "INFO").strip().upper()
    if level not in LEVELS:
        raise ValueError(f"CONTRIBFLOW_LOG_LEVEL={env.get('CONTRIBFLOW_LOG_LEVEL')!r} must be one of "
                         f"{', '.join(LEVELS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(run_id, step, [env[v] for v in _SECRET_VARS if env.get(v)] + _dsn_password(env)))
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler.addFilter(_TextOnly())
    root = get()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    root.propagate = False
    # the OpenLineage client logs through its own loggers: same handler, warnings and up
    ol = logging.getLogger("openlineage")
    for old in list(ol.handlers):
        ol.removeHandler(old)
    ol.addHandler(handler)
    ol.setLevel(logging.WARNING)
    ol.propagate = False
    _ACTIVE = fmt
    return fmt
