"""Connections to the warehouse, with bounded retries for a server that is not up yet."""

from __future__ import annotations

import re
import sys
import time

import psycopg

from contribflow.errors import DatabaseRefused, DatabaseUnavailable
from contribflow.settings import Settings

NOT_TRANSIENT = re.compile(
    r"password authentication failed|authentication failed for user|no pg_hba\.conf entry"
    r"|role \"[^\"]*\" does not exist|database \"[^\"]*\" does not exist|no password supplied"
    r"|is not permitted to log in|permission denied for database|invalid value for parameter \"role\""
    r"|password is required|server requested a password",
    re.IGNORECASE)
"""What a server that is up says when it refuses this login: a wrong password, a missing role or
database, pg_hba.conf. Retrying (or Argo's retryStrategy, which retries exit 75) cannot fix those;
a refused, reset or timed-out connection, or a server starting up, may pass and is retried."""


def refused_login(exc: psycopg.OperationalError) -> bool:
    return bool(NOT_TRANSIENT.search(str(exc)))


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection:
    """Connect using libpq's PG* variables (or CONTRIBFLOW_DSN).

    A refused or unreachable server is retried with exponential backoff (then DatabaseUnavailable,
    exit 75); a login the server refuses (authentication, a missing role or database) is not
    transient and fails at once (DatabaseRefused, exit 1).
    """
    delay = settings.db_connect_backoff_s
    last: Exception | None = None
    for attempt in range(1, settings.db_connect_attempts + 1):
        try:
            return psycopg.connect(settings.dsn, autocommit=autocommit, connect_timeout=10)
        except psycopg.OperationalError as exc:
            if refused_login(exc):
                reason = str(exc).strip().splitlines()[0]
                raise DatabaseRefused(f"PostgreSQL refused the login (not retried: check PGUSER, "
                                      f"PGPASSWORD, PGDATABASE and the roles): {reason}") from None
            last = exc
            if attempt < settings.db_connect_attempts:
                print(
                    f"database not reachable (attempt {attempt}/{settings.db_connect_attempts}), "
                    f"retrying in {delay:.1f}s",
                    file=sys.stderr,
                )
                time.sleep(delay)
                delay = min(delay * 2, 30.0)
    reason = str(last).strip().splitlines()[0] if last else "unknown error"
    raise DatabaseUnavailable(
        f"cannot connect to PostgreSQL after {settings.db_connect_attempts} attempts: {reason}"
    )
