"""`make e2e`'s assertions (scripts/e2e_check.sql) run with psql against a local PostgreSQL after a
local run, so the very query the cluster e2e uses is known to pass on a good run and to name what
went wrong on a bad one."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import subprocess

import pytest

from contribflow.graph import EXIT_STAGE, STAGES, topological_order
from contribflow.local import embedded, runner
from contribflow.settings import Settings

from conftest import ROOT

CHECK = ROOT / "scripts" / "e2e_check.sql"
DAY = dt.date(2026, 11, 24)


def psql() -> str:
    bundled = embedded.bin_dir() / "psql"
    found = str(bundled) if bundled.exists() else shutil.which("psql")
    assert found, "no psql: pgserver bundles one"
    return found


def e2e_check(env: dict[str, str], run_id: str) -> subprocess.CompletedProcess:
    """The same psql flags scripts/cluster.sh uses inside the PostgreSQL pod."""
    return subprocess.run([psql(), "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-v", f"run_id={run_id}",
                           "-f", str(CHECK)], env=env, capture_output=True, text=True, timeout=60)


def local_run(defect_rate: str) -> tuple[Settings, list[runner.StepResult]]:
    settings = Settings.from_env()
    results = runner.run_graph(settings, {"run-date": DAY.isoformat(), "rows": "400", "defect-rate": defect_rate})
    return settings, results


def test_the_expected_steps_are_the_stage_graph_and_its_exit_handler():
    text = CHECK.read_text()
    block = text[text.index("WITH expected"):text.index("), latest AS")]
    listed = re.findall(r"\('([a-z0-9-]+)', (\d+)\)", block)
    assert [name for name, _ in listed] == [s.name for s in topological_order()] + [EXIT_STAGE.name]
    assert [int(n) for _, n in listed] == list(range(1, len(listed) + 1))


@pytest.mark.integration
def test_the_e2e_check_passes_after_a_good_run_and_only_for_that_run(database, sql):
    settings, results = local_run("0.01")
    assert {r.state for r in results} == {"ok"}
    done = e2e_check(database, settings.run_id)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""

    other = e2e_check(database, "no-such-run").stdout.splitlines()
    assert len(other) == len(STAGES) + 1
    assert all(p.startswith("step ") and p.endswith("has no meta.etl_run row for run no-such-run") for p in other)

    sql("truncate marts.fct_contributions")
    assert e2e_check(database, settings.run_id).stdout.splitlines() == ["marts.fct_contributions is empty"]


@pytest.mark.integration
def test_the_e2e_check_names_every_step_that_did_not_succeed_and_the_missing_marts(database, sql):
    settings, results = local_run("0.5")  # half the rows defective: over the threshold, ingest fails
    assert {r.stage: r.state for r in results}["ingest"] == "failed"
    done = e2e_check(database, settings.run_id)
    assert done.returncode == 0, done.stderr
    problems = done.stdout.splitlines()
    assert [p.split(":")[0] for p in problems] == [
        "step ingest ended FAILED",
        f"step dbt-build has no meta.etl_run row for run {settings.run_id}",
        f"step dbt-test has no meta.etl_run row for run {settings.run_id}",
        f"step publish has no meta.etl_run row for run {settings.run_id}",
        "step finish ended FAILED",
        f"raw.contributions holds no row of the run's date {DAY}",
        "marts.fct_contributions does not exist",
        "marts.dim_taxpayer does not exist",
    ]
    assert "threshold" in problems[0].lower() or "quarantin" in problems[0].lower()
