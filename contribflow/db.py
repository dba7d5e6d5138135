"""Connections to the warehouse, with bounded retries for a server that is not up yet."""

from __future__ import annotations

import sys
import time

import psycopg

from contribflow.errors import DatabaseUnavailable
from contribflow.settings import Settings


def connect(settings: Settings, *, autocommit: bool = False) -> psycopg.Connection:
    """Connect using libpq's PG* variables (or CONTRIBFLOW_DSN).

    A refused or unreachable server is retried with exponential backoff; an authentication or
    configuration error is not transient, but it is reported the same clear way after the retries.
    """
    delay = settings.db_connect_backoff_s
    last: Exception | None = None
    for attempt in range(1, settings.db_connect_attempts + 1):
        try:
            return psycopg.connect(settings.dsn, autocommit=autocommit, connect_timeout=10)
        except psycopg.OperationalError as exc:
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
