"""init-db: versioned, idempotent migrations of the raw and meta schemas (dbt owns the rest)."""

from __future__ import annotations

import datetime as dt
import time
from importlib import resources

from contribflow.db import connect
from contribflow.settings import Settings
from contribflow.step import StepRun

LOCK_KEY = 0x434F4E54  # advisory lock: two init-db steps never migrate at once


def migration_files() -> list[tuple[str, str]]:
    """(version, sql) for every migration shipped in the package, in version order."""
    folder = resources.files("contribflow.warehouse") / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def apply_migrations(settings: Settings) -> list[str]:
    """Apply the migrations not yet applied, each in its own transaction; return their versions."""
    applied: list[str] = []
    with connect(settings) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            conn.execute("CREATE SCHEMA IF NOT EXISTS meta")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS meta.schema_migration (
                       version text PRIMARY KEY,
                       applied_at timestamptz NOT NULL DEFAULT clock_timestamp())"""
            )
            conn.commit()
            done = {r[0] for r in conn.execute("SELECT version FROM meta.schema_migration")}
            for version, sql in migration_files():
                if version in done:
                    continue
                with conn.transaction():
                    conn.execute(sql)
                    conn.execute("INSERT INTO meta.schema_migration (version) VALUES (%s)", (version,))
                applied.append(version)
            conn.commit()
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
            conn.commit()
    return applied


def run(settings: Settings, logical_date: dt.date | None) -> StepRun:
    """Migrate, then record the step (meta.etl_run may not exist before the first migration)."""
    started = time.monotonic()
    applied = apply_migrations(settings)
    with StepRun(settings, "init-db", logical_date) as step:
        step.details = {"migrations_applied": len(applied), "versions": ",".join(applied) or "none"}
        step.details["migrate_s"] = f"{time.monotonic() - started:.3f}"
    return step
