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


TRANSIENT_SQLSTATES = {
    "57P01": "admin_shutdown (the server is shutting down, or the session was terminated)",
    "57P02": "crash_shutdown (the server is recovering from a crash)",
    "57P03": "cannot_connect_now (the server is starting up or shutting down)",
    "53300": "too_many_connections",
    "40001": "serialization_failure",
    "40P01": "deadlock_detected",
}
"""The server's errors that a retry may pass (exit 75), besides SQLSTATE class 08 (connection
exception) and an error without a SQLSTATE (the connection was refused, reset or lost: the client's
own error). Every other SQLSTATE is deterministic for this input and exits 1: 57014 query_canceled
(statement_timeout: the same statement times out again), 53100 disk_full, 53200 out_of_memory,
55P03 lock_not_available (lock_timeout), 22xxx data, 42xxx privileges and syntax, XX000. 40001 and
40P01 are safe to retry at every stage: each stage's writes are one transaction (ingest: the whole
file; publish: the swap), rolled back whole, and dbt's relations are rebuilt from raw. docs/reliability.md
keeps this table."""


def transient(exc: BaseException) -> bool:
    """Whether a retry of the step may pass (exit 75) rather than fail the same way (exit 1)."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:  # the client's own error: refused, reset or lost connection, or a refused login
        return isinstance(exc, psycopg.OperationalError) and not refused_login(exc)
    return state.startswith("08") or state in TRANSIENT_SQLSTATES


def libpq_env(dsn: str) -> dict[str, str]:
    """``CONTRIBFLOW_DSN``'s parts as libpq's own variables (PGHOST, PGPORT, PGUSER, PGPASSWORD,
    PGDATABASE, PGOPTIONS, PGSSLMODE, …), for a program that reads those rather than a connection
    string: dbt (dbt/profiles.yml) and psql. A part the DSN names overrides the variable, exactly as
    libpq lets a connection string override the environment; the mapping of keyword to variable is
    libpq's own (``PQconndefaults``). The few keywords without a variable (keepalives, replication,
    fallback_application_name) do not choose the server and are left out."""
    if not dsn:
        return {}
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict

    variables = {o.keyword.decode(): o.envvar.decode() for o in pq.Conninfo.get_defaults() if o.envvar}
    out: dict[str, str] = {}
    for keyword, value in conninfo_to_dict(dsn).items():
        if value is not None and keyword in variables:
            out[variables[keyword]] = str(value)
    return out


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
