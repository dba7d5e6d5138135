"""dbt-run and dbt-test: dbt in-process, each node's result kept in meta.dbt_node_result.

dbt gets only libpq's PG* variables; the pseudonymisation key is removed from its environment, so it
cannot reach compiled SQL, logs or artifacts even by a careless ``env_var`` in a model.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from contribflow.audit import StepRun
from contribflow.db import connect
from contribflow.errors import StageError
from contribflow.settings import Settings

_SCRUBBED_ENV = ("CONTRIBFLOW_PSEUDONYM_KEY",)
DBT_LOCK = "contribflow:dbt"
_PASSED = {"success", "pass"}
_FAILED = {"error", "fail", "runtime error"}


def target_dir(settings: Settings) -> Path:
    return settings.dbt_target_dir or settings.state_dir / "dbt-target"


def _invoke(settings: Settings, command: str, extra: list[str]) -> bool:
    from dbt.cli.main import dbtRunner

    target = target_dir(settings)
    target.mkdir(parents=True, exist_ok=True)
    project = str(settings.dbt_project_dir.resolve())
    saved = {name: os.environ.pop(name) for name in _SCRUBBED_ENV if name in os.environ}
    try:
        result = dbtRunner().invoke([
            command, "--project-dir", project, "--profiles-dir", project,
            "--target-path", str(target.resolve()), "--log-path", str((target / "logs").resolve()),
            *extra,
        ])
    finally:
        os.environ.update(saved)
    if result.exception is not None:
        raise StageError(f"dbt {command} could not run: {result.exception}")
    return bool(result.success)


@contextlib.contextmanager
def _one_dbt_at_a_time(settings: Settings) -> Iterator[None]:
    """A session advisory lock around dbt, held on a connection of its own (released when it closes,
    even if the process dies). Two dbt builds of the same relations at once collide ("relation
    already exists"); this lock serialises them, on top of the Argo mutex."""
    with connect(settings, autocommit=True) as conn:
        key = (DBT_LOCK,)
        if not conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", key).fetchone()[0]:
            print("another dbt run holds the warehouse; waiting for it to finish", file=sys.stderr, flush=True)
            conn.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", key)
        yield


def _record(settings: Settings, step: str, run_results: dict) -> list[dict]:
    invocation = run_results.get("metadata", {}).get("invocation_id", "")
    nodes = run_results.get("results", [])
    with connect(settings) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO meta.dbt_node_result (run_id, step, invocation_id, unique_id,
                   resource_type, status, failures, execution_time_s, message)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
            [(settings.run_id, step, invocation, n["unique_id"], n["unique_id"].split(".")[0],
              n["status"], n.get("failures"), round(n.get("execution_time") or 0.0, 3),
              (n.get("message") or "")[:2000]) for n in nodes],
        )
    return nodes


def run(settings: Settings, day: dt.date, command: str, full_refresh: bool = False) -> StepRun:
    """``command`` is ``run`` or ``test``; the step fails when dbt reports any error or failure."""
    step_name = f"dbt-{command}"
    with StepRun(settings, step_name, day) as step:
        extra = ["--vars", json.dumps({"run_date": day.isoformat()})]
        if full_refresh:
            extra.append("--full-refresh")
        with _one_dbt_at_a_time(settings):
            ok = _invoke(settings, command, extra)
        results_file = target_dir(settings) / "run_results.json"
        if not results_file.exists():
            raise StageError(f"dbt {command} wrote no {results_file}")
        nodes = _record(settings, step_name, json.loads(results_file.read_text()))
        statuses = Counter(n["status"] for n in nodes)
        passed = sum(statuses[s] for s in _PASSED)
        failed = [n["unique_id"] for n in nodes if n["status"] in _FAILED]
        noun = "models" if command == "run" else "tests"
        step.details = {
            f"{noun}_{'ok' if command == 'run' else 'passed'}": passed,
            f"{noun}_failed": len(failed),
            "warnings": statuses["warn"],
        }
        if not ok or failed:
            listed = ", ".join(failed[:10]) + (" …" if len(failed) > 10 else "")
            raise StageError(f"dbt {command}: {len(failed)} failed: {listed or 'see dbt log'}")
    return step
