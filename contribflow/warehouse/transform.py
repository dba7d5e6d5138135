"""dbt-build and dbt-test: dbt in-process, each node's result kept in meta.dbt_node_result.

dbt-build (``dbt run``) builds the marts into ``marts_build``, out of analysts' sight, after
claiming the build slot (contribflow/warehouse/build_slot.py); dbt-test (``dbt test``, then ``dbt source
freshness``, recorded in meta.source_freshness) tests that build, and marks it TESTED, or
TEST_FAILED. Only ``contribflow publish`` changes what analysts read.

dbt gets only libpq's PG* variables (CONTRIBFLOW_DSN's parts among them, db.libpq_env); the
pseudonymisation key is removed from its environment, so it cannot reach compiled SQL, logs or
artifacts even by a careless ``env_var`` in a model.

Each step parses the project once (``dbt parse``), then runs its dbt commands on that manifest. The
parse starts from dbt's saved parse (``partial_parse.msgpack`` in the target folder) and, in an empty
target folder (a new pod's emptyDir), from the one the dbt image ships (``CONTRIBFLOW_DBT_SAVED_PARSE``,
made by ``python -m contribflow.warehouse.transform --save-parse`` at build time), so no pod parses the whole
project. dbt keeps a saved parse only if its state check matches (dbt-core's
``ManifestLoader.build_manifest_state_check``): the dbt version, the command-line vars, ``--profile``/
``--target``, the env vars read in dbt_project.yml, dbt_project.yml itself, and a hash of the target's
connection fields (host, port, user, database, schema, sslmode, …; not the password). The host and
user differ from one deployment to the next (and the user comes from a Secret), so the parse runs with
those fields set to fixed placeholders (``PARSE_CONNECTION``): parsing never connects, and of the
connection only the database (``PGDATABASE``, kept) and the schema reach the parsed nodes. The shipped
parse is therefore valid wherever ``PGDATABASE`` is the one it was made with (the chart's default,
``contribflow``); elsewhere dbt says "Unable to do partial parsing" and parses in full, as before.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from contribflow import logs
from contribflow.db import connect, libpq_env
from contribflow.errors import DatabaseUnavailable, StageError
from contribflow.settings import Settings
from contribflow.step import StepRun
from contribflow.warehouse import build_slot

log = logs.get("transform")

_SCRUBBED_ENV = ("CONTRIBFLOW_PSEUDONYM_KEY",)
DBT_LOCK = build_slot.DBT_LOCK
SAVED_PARSE = "partial_parse.msgpack"
PARSE_CONNECTION = {"PGHOST": "dbt-parse-only", "PGPORT": "5432", "PGUSER": "dbt-parse-only",
                    "PGSSLMODE": "prefer", "PGPASSWORD": None}
"""The connection fields of dbt/profiles.yml while dbt parses (None: unset), so that the saved parse's
state check does not depend on where the warehouse is or who logs in (see the module's docstring).
PGDATABASE is not among them: the parsed nodes name their database."""
_PASSED = {"success", "pass"}
_FAILED = {"error", "fail", "runtime error"}


def target_dir(settings: Settings) -> Path:
    return settings.dbt_target_dir or settings.state_dir / "dbt-target"


@contextlib.contextmanager
def _dbt_environment(settings: Settings, env: dict[str, str | None] | None = None) -> Iterator[None]:
    """The process environment while dbt runs in-process, restored after: CONTRIBFLOW_DSN's parts as
    libpq's PG* variables (db.libpq_env; dbt/profiles.yml reads those, so dbt reaches the server, the
    database, the login, PGOPTIONS and sslmode the DSN names, as every other stage does), then ``env``
    (None: unset), and without the pseudonymisation key, so that it cannot reach compiled SQL, logs
    or artifacts even by a careless ``env_var`` in a model."""
    wanted: dict[str, str | None] = {**libpq_env(settings.dsn), **(env or {}),
                                     **{name: None for name in _SCRUBBED_ENV}}
    before = {name: os.environ.get(name) for name in wanted}
    try:
        for name, value in wanted.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _invoke(settings: Settings, command: str, extra: list[str], *more: str, manifest=None,
            env: dict[str, str | None] | None = None):
    """``dbt <command>`` in-process (in _dbt_environment); dbt's result (``.success``, ``.result``).
    ``manifest``: one parsed earlier in this process, so that dbt neither loads nor writes it again.
    Nothing that changes from one day to the next reaches dbt as ``--vars``: dbt's partial parsing
    starts over from scratch whenever the command-line vars change (its state check hashes them),
    whereas the saved parse (partial_parse.msgpack in the target folder) stays valid day after day."""
    from dbt.cli.main import dbtRunner

    target = target_dir(settings)
    target.mkdir(parents=True, exist_ok=True)
    project = str(settings.dbt_project_dir.resolve())
    with _dbt_environment(settings, env):
        result = dbtRunner(manifest=manifest).invoke([
            *command.split(), "--project-dir", project, "--profiles-dir", project,
            "--target-path", str(target.resolve()), "--log-path", str((target / "logs").resolve()),
            *extra, *more,
        ])
    if result.exception is not None:
        raise StageError(f"dbt {command} could not run: {result.exception}")
    return result


def _log_args() -> list[str]:
    """dbt's own lines as JSON objects too, when ContribFlow logs JSON."""
    return ["--log-format", "json"] if logs.active_format() == "json" else []


def _parse(settings: Settings):
    """The project's manifest, parsed once for the dbt commands of one step: partially, from the saved
    parse (the target folder's, else the image's), when nothing changed; with the connection fields
    as PARSE_CONNECTION sets them."""
    target = target_dir(settings)
    shipped = settings.dbt_saved_parse
    if shipped is not None and shipped.is_file() and not (target / SAVED_PARSE).exists():
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shipped, target / SAVED_PARSE)
    result = _invoke(settings, "parse", _log_args(), env=PARSE_CONNECTION)
    if not result.success or result.result is None:
        raise StageError("dbt parse failed: see the dbt log")
    return result.result


@contextlib.contextmanager
def _one_dbt_at_a_time(settings: Settings) -> Iterator[None]:
    """A session advisory lock around dbt, held on a connection of its own (released when it closes,
    even if the process dies). Two dbt builds of the same relations at once collide ("relation
    already exists"); this lock serialises them, on top of the Argo mutex."""
    with connect(settings, autocommit=True) as conn:
        key = (DBT_LOCK,)
        if not conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", key).fetchone()[0]:
            log.info("another dbt run holds the warehouse; waiting for it to finish")
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


NODES_EXPLAINED = 3
"""How many failed nodes' causes a failure names (the rest by id only, up to NODES_LISTED)."""
NODES_LISTED = 10
CAUSE_LINES = 3
CAUSE_CHARS = 300
_QUOTED_KEY = re.compile(r"(Key \([^)]*\))=\((?:[^()]|\([^)]*\))*\)")
_QUOTED_VALUE = re.compile(r':\s*"[^"]{0,200}"')
_COMPILED_AT = re.compile(r"^\s*compiled (?:code|sql) at ", re.IGNORECASE)
_DBT_WRAPPER = re.compile(r"^(?:(?:Runtime|Database|Compilation) Error(?: in .*)?"
                          r"|An error occurred during execution of unit test .*)$")
"""dbt's own lines around a cause ("Runtime Error in unit_test x (file)", "Database Error in model
y"): the node is named already, so they would only crowd the cause out of the bounded text."""


def cause(message: str | None) -> str:
    """The database's message of a failed node, for meta.etl_run.error and the run summary: its first
    few lines but dbt's wrappers (PostgreSQL's error and DETAIL, dbt's own cause), joined, bounded.
    The values a message quotes are masked (a key's values; an input literal, PostgreSQL's ``: "…"``;
    names of relations, columns and constraints are kept): the models never select
    raw.contributions.taxpayer_id (tests/test_state_over_time.py holds them to it), and this keeps
    any other value out of the audit trail too."""
    lines = [line.strip() for line in (message or "").splitlines()
             if line.strip() and not _COMPILED_AT.match(line)]
    lines = ([line for line in lines if not _DBT_WRAPPER.match(line)] or lines)[:CAUSE_LINES]
    text = "; ".join(lines)
    text = _QUOTED_KEY.sub(r"\1=(…)", text)
    text = _QUOTED_VALUE.sub(': "…"', text)
    return text if len(text) <= CAUSE_CHARS else text[:CAUSE_CHARS - 1] + "…"


def failure_text(command: str, failed: list[dict]) -> str:
    """What a failed dbt step says: how many nodes failed, and for the first few the node and its
    cause (the database's message), so that meta.etl_run.error, the run summary and ``contribflow
    audit`` name it without a look into meta.dbt_node_result."""
    if not failed:
        return f"dbt {command}: failed: see the dbt log"
    parts = [f"{n['unique_id']} ({cause(n.get('message')) or n['status']})" for n in failed[:NODES_EXPLAINED]]
    parts += [n["unique_id"] for n in failed[NODES_EXPLAINED:NODES_LISTED]]
    return (f"dbt {command}: {len(failed)} failed: " + ", ".join(parts)
            + (" …" if len(failed) > NODES_LISTED else ""))


def nodes_wall_s(results: list[dict]) -> float:
    """Seconds during which at least one of ``results``' nodes was being compiled or executed (the
    union of their timings; with several threads, their execution times overlap): the step's own
    work, as opposed to dbt's start-up."""
    spans = sorted((min(t["started_at"] for t in r["timing"]), max(t["completed_at"] for t in r["timing"]))
                   for r in results if r.get("timing"))
    total, end = 0.0, None
    for start_s, stop_s in ((dt.datetime.fromisoformat(a.replace("Z", "+00:00")),
                             dt.datetime.fromisoformat(b.replace("Z", "+00:00"))) for a, b in spans):
        if end is None or start_s > end:
            total += (stop_s - start_s).total_seconds()
            end = stop_s
        elif stop_s > end:
            total += (stop_s - end).total_seconds()
            end = stop_s
    return total


def _freshness(settings: Settings, step: StepRun, manifest=None) -> None:
    """``dbt source freshness`` of raw.contributions, recorded in meta.source_freshness. Recorded and
    shown, not fatal: a file that has not arrived is pick's to report (late), and re-running an old
    day must not fail because raw has not grown since."""
    target = target_dir(settings)
    (target / "sources.json").unlink(missing_ok=True)
    try:
        _invoke(settings, "source freshness", [], "--select", "source:raw.contributions",
                manifest=manifest)
    except StageError as exc:  # recorded, not fatal (see above)
        step.details["freshness"] = "not checked"
        log.warning(f"dbt-test: source freshness not checked: {exc}")
        return
    sources = target / "sources.json"
    if not sources.exists():
        step.details["freshness"] = "not checked"
        return
    results = json.loads(sources.read_text()).get("results", [])
    step.details["nodes_s"] = round(step.details.get("nodes_s", 0.0) + nodes_wall_s(results), 3)
    with connect(settings) as conn, conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO meta.source_freshness (run_id, source, max_loaded_at, snapshotted_at, age_s, status)
               VALUES (%s, %s, %s, %s, %s, %s)""",
            [(settings.run_id, r["unique_id"], r.get("max_loaded_at"), r.get("snapshotted_at"),
              r.get("max_loaded_at_time_ago_in_s"), r["status"]) for r in results])
    worst = max((r["status"] for r in results), key=["pass", "warn", "error", "runtime error"].index,
                default="not checked")
    step.details["freshness"] = worst
    if worst != "pass":
        log.warning(f"dbt-test: source freshness of raw.contributions: {worst}", extra={"freshness": worst})


def run(settings: Settings, day: dt.date, command: str, full_refresh: bool = False) -> StepRun:
    """``command`` is ``build`` (``dbt run`` into marts_build) or ``test`` (``dbt test`` of that build,
    then source freshness); the step fails when dbt reports any error or failure."""
    step_name = f"dbt-{command}"
    with StepRun(settings, step_name, day, artifacts=target_dir(settings)) as step:
        extra = (["--full-refresh"] if full_refresh else []) + _log_args()
        if command == "build":
            build_id = build_slot.claim(settings, day, full_refresh)
        else:
            with connect(settings) as conn:
                build = build_slot.this_runs_build(conn, settings)
            if build is None or build[1] not in ("BUILT", "TESTED"):
                raise StageError(f"run {settings.run_id} has no build to test"
                                 + (f" (its build {build[0]} is {build[1]})" if build else "")
                                 + ": run dbt-build first")
            build_id = build[0]
        step.details["build_id"] = build_id
        try:
            with _one_dbt_at_a_time(settings):
                if command == "build":
                    kept = build_slot.keep_failed_build(settings, build_id)
                    if kept:
                        step.details["kept_failed_build"] = kept
                # One parse (see _parse) serves the step's dbt commands (dbt-test: test, source freshness).
                manifest = _parse(settings)
                ok = _invoke(settings, "run" if command == "build" else "test", extra,
                             manifest=manifest).success
                results_file = target_dir(settings) / "run_results.json"
                if not results_file.exists():
                    raise StageError(f"dbt {command} wrote no {results_file}")
                nodes = _record(settings, step_name, json.loads(results_file.read_text()))
                step.details["nodes_s"] = round(nodes_wall_s(nodes), 3)
                if command == "test":
                    _freshness(settings, step, manifest)
            statuses = Counter(n["status"] for n in nodes)
            passed = sum(statuses[s] for s in _PASSED)
            failed = [n["unique_id"] for n in nodes if n["status"] in _FAILED]
            noun = "models" if command == "build" else "tests"
            step.details.update({
                f"{noun}_{'ok' if command == 'build' else 'passed'}": passed,
                f"{noun}_failed": len(failed),
                "warnings": statuses["warn"],
            })
            if not ok or failed:
                raise StageError(failure_text(command, [n for n in nodes if n["status"] in _FAILED]))
        except StageError as exc:
            if isinstance(exc, DatabaseUnavailable):
                raise  # transient: the build stays open for the retry
            build_slot.mark(settings, build_id, "BUILD_FAILED" if command == "build" else "TEST_FAILED", str(exc))
            raise
        build_slot.mark(settings, build_id, "BUILT" if command == "build" else "TESTED")
        if command == "build":
            checksum = project_checksum(manifest)
            step.details["dbt_checksum"] = checksum[:12]
            with connect(settings, autocommit=True) as conn:
                conn.execute("UPDATE meta.mart_build SET dbt_version = %s, dbt_checksum = %s WHERE id = %s",
                             (dbt_version(), checksum, build_id))
    return step


def dbt_version() -> str:
    from dbt.version import __version__ as version

    return str(version)


def project_checksum(manifest) -> str:
    """The dbt project's code as one sha256, recorded with each build and its publication: over the
    project's own nodes (unique id, dbt's checksum of the file, the enforced columns and types) and
    macros (unique id, sha256 of the macro's SQL), and its sources (unique id, relation), sorted.
    Unlike a hash of manifest.json, it does not change with the run (no timestamps, invocation ids
    or connection fields), only with the code."""
    project = manifest.metadata.project_name if getattr(manifest.metadata, "project_name", None) else "contribflow"
    lines = []
    for uid, node in manifest.nodes.items():
        if node.package_name != project:
            continue
        columns = sorted((name, str(getattr(col, "data_type", None))) for name, col in node.columns.items())
        lines.append(f"node {uid} {node.checksum.checksum} {json.dumps(columns)}")
    for uid, macro in manifest.macros.items():
        if macro.package_name == project:
            lines.append(f"macro {uid} {hashlib.sha256(macro.macro_sql.encode()).hexdigest()}")
    for uid, source in manifest.sources.items():
        if source.package_name == project:
            lines.append(f"source {uid} {source.schema}.{source.identifier}")
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


def build_scratch(settings: Settings, target: Path, variables: dict) -> str:
    """``dbt run --full-refresh`` of every model into the schema ``variables['scratch_schema']``
    (the macro generate_schema_name), for ``contribflow reproduce``: its own target folder (the
    vars change dbt's parse, which must not replace the daily steps' saved parse), no tests.
    Returns the project's checksum (project_checksum); raises StageError naming the failed models."""
    scratch = dataclasses.replace(settings, dbt_target_dir=target, dbt_saved_parse=None)
    args = ["--vars", json.dumps(variables), *_log_args()]
    parsed = _invoke(scratch, "parse", args)
    if not parsed.success or parsed.result is None:
        raise StageError("dbt parse failed: see the dbt log")
    result = _invoke(scratch, "run", ["--full-refresh", *args], manifest=parsed.result)
    results_file = target / "run_results.json"
    nodes = json.loads(results_file.read_text()).get("results", []) if results_file.exists() else []
    failed = [n for n in nodes if n.get("status") in _FAILED]
    if not result.success or failed:
        raise StageError(failure_text("run", failed))
    return project_checksum(parsed.result)


def save_parse(settings: Settings) -> Path:
    """Parse the project into the target folder as _parse does, keep only dbt's saved parse, and
    return it: the dbt image runs this at build time (``python -m contribflow.warehouse.transform
    --save-parse``) and ships the file as CONTRIBFLOW_DBT_SAVED_PARSE. No database is needed."""
    target = target_dir(settings)
    if target.exists() and any(target.iterdir()):
        raise StageError(f"{target} is not empty: --save-parse writes into a new folder only")
    _parse(settings)
    saved = target / SAVED_PARSE
    if not saved.is_file():
        raise StageError(f"dbt parse wrote no {saved}")
    for path in target.iterdir():
        if path.is_dir():
            shutil.rmtree(path)
        elif path != saved:
            path.unlink()
    return saved


if __name__ == "__main__":
    if sys.argv[1:] != ["--save-parse"]:
        sys.exit("usage: python -m contribflow.warehouse.transform --save-parse  (CONTRIBFLOW_DBT_PROJECT_DIR, "
                 "CONTRIBFLOW_DBT_TARGET_DIR, PGDATABASE: where the pods will run)")
    print(f"saved dbt parse: {save_parse(Settings.from_env())}")
