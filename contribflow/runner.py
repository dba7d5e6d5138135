"""``contribflow run``: the stage graph executed locally, step by step, through the same CLI the
containers run, with the same parameters and output passing as the Argo DAG."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from contribflow import dbroles
from contribflow.db import connect
from contribflow.graph import EXIT_STAGE, PARAMETERS, STAGES, Stage, render_args, topological_order
from contribflow.settings import Settings


@dataclass
class StepResult:
    stage: str
    state: str  # ok, failed, skipped
    seconds: float = 0.0
    note: str = ""


def cli_command(stage: Stage, args: list[str]) -> list[str]:
    """``contribflow <stage> …`` run with this interpreter, so it works inside any virtualenv."""
    return [sys.executable, "-m", "contribflow", stage.name, *args]


def outputs_dir(settings: Settings, stage: str) -> Path:
    return settings.state_dir / "runs" / settings.run_id / stage


def _resolver(settings: Settings, params: dict[str, str], workflow_status: str = ""):
    def resolve(kind: str, name: str, output: str | None) -> str:
        if kind == "param":
            return params[name]
        if kind == "workflow":
            return workflow_status
        path = outputs_dir(settings, name) / str(output)
        if not path.exists():
            raise RuntimeError(f"stage {name!r} did not write its output {output!r}")
        return path.read_text(encoding="utf-8")

    return resolve


def _run_stage(settings: Settings, stage: Stage, args: list[str], env: dict[str, str]) -> tuple[int, float]:
    stage_env = dict(dbroles.stage_env(stage.db_role, env), CONTRIBFLOW_TASK_NAME=stage.name,
                     CONTRIBFLOW_OUTPUTS_DIR=str(outputs_dir(settings, stage.name)))
    if not stage.needs_pseudonym_key:
        stage_env.pop("CONTRIBFLOW_PSEUDONYM_KEY", None)  # as in the cluster: only ingest mounts it
    started = time.monotonic()
    code = subprocess.call(cli_command(stage, args), env=stage_env)
    return code, time.monotonic() - started


def run_graph(settings: Settings, params: dict[str, str], env: dict[str, str] | None = None) -> list[StepResult]:
    """Run every stage in dependency order; a failure skips its dependants. Then the exit stage."""
    env = dict(os.environ if env is None else env, CONTRIBFLOW_RUN_ID=settings.run_id)
    params = {**PARAMETERS, **params}
    resolve = _resolver(settings, params)
    results: dict[str, StepResult] = {}
    order = topological_order(STAGES)
    for number, stage in enumerate(order, 1):
        label = f"[{number}/{len(order)}] {stage.name}"
        blocked = [d for d in stage.depends if results[d].state == "failed" or results[d].state == "blocked"]
        if blocked:
            results[stage.name] = StepResult(stage.name, "blocked", note=f"upstream {blocked[0]} failed")
            print(f"{label}: not run, upstream {blocked[0]} failed", flush=True)
            continue
        if stage.when and params.get(stage.when) != "true":
            results[stage.name] = StepResult(stage.name, "skipped", note=f"{stage.when}={params.get(stage.when)}")
            print(f"{label}: skipped ({stage.when}={params.get(stage.when)})", flush=True)
            continue
        print(f"{label} …", flush=True)
        args = render_args(stage.args, resolve) + (["--wait"] if stage.waits_for_file else [])
        code, seconds = _run_stage(settings, stage, args, env)
        state = "ok" if code == 0 else "failed"
        results[stage.name] = StepResult(stage.name, state, seconds)
        print(f"{label}: {state} in {seconds:.1f}s", flush=True)
    status = "Succeeded" if all(r.state in ("ok", "skipped") for r in results.values()) else "Failed"
    finish_args = render_args(EXIT_STAGE.args, _resolver(settings, params, status))
    code, seconds = _run_stage(settings, EXIT_STAGE, finish_args, env)
    results[EXIT_STAGE.name] = StepResult(EXIT_STAGE.name, "ok" if code == 0 else "failed", seconds)
    return list(results.values())


SUMMARY_SQL = """
SELECT step, status, duration_s, rows_in, rows_loaded, rows_rejected, source_file, details, error
  FROM meta.etl_run WHERE run_id = %s ORDER BY id
"""


def summary(settings: Settings, day: dt.date) -> str:
    """The run's steps as meta.etl_run recorded them (the audit trail is the source of truth)."""
    with connect(settings) as conn:
        rows = conn.execute(SUMMARY_SQL, (settings.run_id,)).fetchall()
    lines = [f"run {settings.run_id} for {day}",
             f"{'step':<10} {'status':<8} {'seconds':>8} {'in':>9} {'loaded':>9} {'rejected':>9}  notes"]
    for step, status, seconds, rows_in, loaded, rejected, source, details, error in rows:
        notes = []
        for key in ("models_ok", "models_failed", "tests_passed", "tests_failed", "freshness", "build_id",
                    "fct_rows_inserted", "dim_rows", "waited_s", "rows_already_loaded"):
            if key in details:
                notes.append(f"{key}={details[key]}")
        if source:
            notes.append(source)
        if error:
            notes.append(f"error: {error}")
        lines.append(
            f"{step:<10} {status:<8} {float(seconds or 0):>8.2f} {_n(rows_in):>9} {_n(loaded):>9} "
            f"{_n(rejected):>9}  {' '.join(notes)}"
        )
    return "\n".join(lines)


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)
