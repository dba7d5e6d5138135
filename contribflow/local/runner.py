"""``contribflow run``: the stage graph executed locally, step by step, through the same CLI the
containers run, with the same parameters and output passing as the Argo DAG."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from contribflow import roles
from contribflow.db import connect
from contribflow.graph import EXIT_STAGE, PARAMETERS, STAGES, Stage, render_args, topological_order
from contribflow.settings import Settings


@dataclass
class StepResult:
    stage: str
    state: str  # ok, failed, skipped
    seconds: float = 0.0
    note: str = ""
    cpu_s: float = 0.0
    """CPU seconds (user + system) of the stage's process and its children: unlike wall time, not
    inflated by other work on a shared machine."""


def cli_command(stage: Stage, args: list[str]) -> list[str]:
    """``contribflow <stage> …`` run with this interpreter, so it works inside any virtualenv."""
    return [sys.executable, "-m", "contribflow", stage.name, *args]


Command = Callable[[Stage, list[str]], list[str]]
"""How a stage is executed: the command line of ``contribflow <stage> <args>`` (run_graph's
``command``; e.g. images/imagetool.py runs each stage in its image's own venv)."""


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


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _stage_env(settings: Settings, stage: Stage, env: dict[str, str]) -> dict[str, str]:
    stage_env = dict(roles.stage_env(stage.db_role, env), CONTRIBFLOW_TASK_NAME=stage.name,
                     CONTRIBFLOW_OUTPUTS_DIR=str(outputs_dir(settings, stage.name)))
    if not stage.needs_pseudonym_key:
        stage_env.pop("CONTRIBFLOW_PSEUDONYM_KEY", None)  # as in the cluster: only ingest mounts it
    return stage_env


def _run_stage(settings: Settings, stage: Stage, args: list[str], env: dict[str, str],
               command: Command) -> tuple[int, float, float]:
    stage_env = _stage_env(settings, stage, env)
    started, cpu = time.monotonic(), _children_cpu()
    code = subprocess.call(command(stage, args), env=stage_env)
    return code, time.monotonic() - started, _children_cpu() - cpu


def _process_group(order: list[Stage], first: int, command: Command) -> list[Stage]:
    """``order[first]`` and the stages right after it that can share its process: a chain (each
    depends on the one before only) of one image, one database role and the same secrets, whose
    arguments need no stage's output (dbt-build, dbt-test and publish). One process instead of three
    spares the run two interpreter start-ups and, above all, a second import of dbt (~1.5 s). Each
    stage still runs through the CLI with its own environment, outputs folder and exit code, and a
    failure stops the chain as it stops the graph (``contribflow run-stages``). Any other ``command``
    than cli_command (e.g. images/imagetool.py, one image venv per stage) gets one process per stage."""
    group = [order[first]]
    if command is not cli_command:
        return group
    for stage in order[first + 1:]:
        last = group[-1]
        if (stage.depends != (last.name,) or (stage.image, stage.db_role, stage.needs_pseudonym_key)
                != (last.image, last.db_role, last.needs_pseudonym_key)
                or stage.when or stage.waits_for_file or any("{output:" in a for a in stage.args)):
            break
        group.append(stage)
    return group


def _run_group(settings: Settings, stages: list[Stage], args: list[list[str]],
               env: dict[str, str]) -> list[tuple[str, int, float, float]]:
    """Run ``stages`` (see _process_group) in one process; (stage, exit code, wall s, CPU s) of each
    stage that ran, the first stage bearing the process's start-up."""
    folder = settings.state_dir / "runs" / settings.run_id
    folder.mkdir(parents=True, exist_ok=True)
    spec, report = folder / f"group-{stages[0].name}.json", folder / f"group-{stages[0].name}.out.json"
    report.unlink(missing_ok=True)
    spec.write_text(json.dumps({"report": str(report), "stages": [
        {"name": s.name, "args": a, "env": {k: _stage_env(settings, s, env)[k]
                                            for k in ("CONTRIBFLOW_TASK_NAME", "CONTRIBFLOW_OUTPUTS_DIR")}}
        for s, a in zip(stages, args)]}))
    started = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "contribflow", "run-stages", str(spec)],
                           env=_stage_env(settings, stages[0], env))
    done = [(r["stage"], r["code"], r["wall_s"], r["cpu_s"])
            for r in (json.loads(report.read_text()) if report.exists() else [])]
    if code != 0 and (not done or done[-1][1] == 0):  # the process died between or inside stages
        ran = sum(r[2] for r in done)
        done.append((stages[len(done)].name, code or 1, time.monotonic() - started - ran, 0.0))
    return done


def rebuild_stages() -> tuple[Stage, ...]:
    """The stages after ingest (dbt-build, dbt-test, publish), the first one depending on nothing:
    what ``contribflow apply`` runs after a correction, as the daily run does after its ingest."""
    after = [s for s in STAGES if s.db_role == "transformer"]
    return (dataclasses.replace(after[0], depends=()), *after[1:])


def run_graph(settings: Settings, params: dict[str, str], env: dict[str, str] | None = None,
              command: Command = cli_command, stages: tuple[Stage, ...] = STAGES) -> list[StepResult]:
    """Run every stage in dependency order; a failure skips its dependants. Then the exit stage.
    ``command``: how each stage is executed (cli_command: this interpreter's ``contribflow``);
    ``stages``: the daily graph, or a part of it (rebuild_stages)."""
    env = dict(os.environ if env is None else env, CONTRIBFLOW_RUN_ID=settings.run_id)
    params = {**PARAMETERS, **params}
    resolve = _resolver(settings, params)
    results: dict[str, StepResult] = {}
    order = topological_order(stages)
    for number, stage in enumerate(order, 1):
        label = f"[{number}/{len(order)}] {stage.name}"
        if stage.name in results:  # ran in the process of an earlier stage (_process_group)
            continue
        blocked = [d for d in stage.depends if results[d].state == "failed" or results[d].state == "blocked"]
        if blocked:
            results[stage.name] = StepResult(stage.name, "blocked", note=f"upstream {blocked[0]} failed")
            print(f"{label}: not run, upstream {blocked[0]} failed", flush=True)
            continue
        if stage.when and params.get(stage.when) != "true":
            results[stage.name] = StepResult(stage.name, "skipped", note=f"{stage.when}={params.get(stage.when)}")
            print(f"{label}: skipped ({stage.when}={params.get(stage.when)})", flush=True)
            continue
        group = _process_group(order, number - 1, command)
        if len(group) > 1:
            print(f"{label} …  (then {', '.join(s.name for s in group[1:])}, in the same process)", flush=True)
            group_args = [render_args(s.args, resolve) for s in group]
            for name, code, seconds, cpu in _run_group(settings, group, group_args, env):
                state = "ok" if code == 0 else "failed"
                results[name] = StepResult(name, state, seconds, cpu_s=cpu)
                print(f"[{[s.name for s in order].index(name) + 1}/{len(order)}] {name}: {state} in {seconds:.1f}s",
                      flush=True)
            continue
        print(f"{label} …", flush=True)
        args = render_args(stage.args, resolve) + (["--wait"] if stage.waits_for_file else [])
        code, seconds, cpu = _run_stage(settings, stage, args, env, command)
        state = "ok" if code == 0 else "failed"
        results[stage.name] = StepResult(stage.name, state, seconds, cpu_s=cpu)
        print(f"{label}: {state} in {seconds:.1f}s", flush=True)
    status = "Succeeded" if all(r.state in ("ok", "skipped") for r in results.values()) else "Failed"
    finish_args = render_args(EXIT_STAGE.args, _resolver(settings, params, status))
    code, seconds, cpu = _run_stage(settings, EXIT_STAGE, finish_args, env, command)
    results[EXIT_STAGE.name] = StepResult(EXIT_STAGE.name, "ok" if code == 0 else "failed", seconds, cpu_s=cpu)
    _write_timings(settings, list(results.values()))
    return list(results.values())


def _write_timings(settings: Settings, results: list[StepResult]) -> None:
    """Each stage process's wall and CPU seconds, as the runner saw them (start-up included), in
    <state>/runs/<run id>/stages.json: ``make bench`` splits a run's time with it."""
    folder = settings.state_dir / "runs" / settings.run_id
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "stages.json").write_text(json.dumps(
        [{"stage": r.stage, "state": r.state, "wall_s": round(r.seconds, 3), "cpu_s": round(r.cpu_s, 3)}
         for r in results], indent=1))


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
                    "fct_rows_inserted", "fct_rows_removed", "dim_rows", "withdrawals_applied",
                    "columns_widened", "waited_s", "rows_already_loaded"):
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

