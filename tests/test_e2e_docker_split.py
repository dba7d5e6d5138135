"""The split `make e2e-docker` prints and checks for each step (tests/e2e_docker.py), without an engine."""

from __future__ import annotations

import json
import math
from pathlib import Path

from argo_replay import Attempt, ReplayResult, TaskRun
from docker_executor import DockerExecutor
from e2e_docker import StepTiming, check_saved_parse, check_split


def test_a_split_that_adds_up_passes_and_its_parts_are_derived():
    row = StepTiming("run 1 dbt-build", "img", "ok", wall_s=4.0, container_s=3.6, in_step_s=3.0, work_s=0.4)
    assert check_split([row]) == []
    assert (round(row.engine_s, 3), round(row.start_up_s, 3), round(row.fixed_s, 3)) == (0.4, 0.6, 3.6)


def test_a_split_that_does_not_add_up_or_misses_a_figure_fails():
    too_long = StepTiming("run 1 ingest", "img", "ok", wall_s=1.0, container_s=0.6, in_step_s=0.7, work_s=0.7)
    work_over = StepTiming("run 1 publish", "img", "ok", wall_s=1.0, container_s=0.6, in_step_s=0.1, work_s=0.2)
    missing = StepTiming("run 1 pick", "img", "ok", wall_s=1.0, container_s=None, in_step_s=0.1, work_s=0.1)
    no_row = StepTiming("run 1 finish", "img", "ok", wall_s=1.0, container_s=0.5, in_step_s=math.nan, work_s=0.1)
    skipped = StepTiming("run 2 generate", "img", "skipped", ran=False)
    problems = check_split([too_long, work_over, missing, no_row, skipped])
    assert len(problems) == 4
    assert "run 1 ingest: the split does not add up" in problems[0]
    assert "run 1 publish: the split does not add up" in problems[1]
    assert problems[2] == "run 1 pick: no container time (the split needs each figure)"
    assert problems[3] == "run 1 finish: no in-step time (the split needs each figure)"


def _dbt_run(tmp_path: Path, perf: dict | None, said: str) -> tuple[DockerExecutor, ReplayResult]:
    executor = DockerExecutor("docker", "net")
    executor.mounts["wf-dbt-build-5"] = {"/tmp": tmp_path}
    if perf is not None:
        (tmp_path / "dbt-target").mkdir()
        (tmp_path / "dbt-target" / "perf_info.json").write_text(json.dumps(perf))
    run = TaskRun("dbt-build", "Succeeded", "wf-dbt-build-5", env={"CONTRIBFLOW_DBT_TARGET_DIR": "/tmp/dbt-target"},
                  attempts=[Attempt(0, said, "", 4.0, 3.6)])
    return executor, ReplayResult("Succeeded", {"dbt-build": run}, None)


def test_a_dbt_pod_that_parsed_nothing_passes(tmp_path: Path):
    executor, result = _dbt_run(tmp_path, {"path_count": 146, "parsed_path_count": 0, "load_all_elapsed": 0.2},
                                "10:00:00  Running with dbt=1.11.16\n")
    assert check_saved_parse(executor, result, ("dbt-build",)) == []


def test_a_dbt_pod_that_parsed_the_project_fails(tmp_path: Path):
    executor, result = _dbt_run(tmp_path, {"path_count": 146, "parsed_path_count": 146},
                                "10:00:00  Unable to do partial parsing because profile has changed\n")
    problems = check_saved_parse(executor, result, ("dbt-build", "dbt-test"))
    assert problems == [
        "dbt-build parsed the dbt project again: 10:00:00  Unable to do partial parsing because profile has changed",
        "dbt-build: dbt parsed 146 of 146 files (perf_info.json: present), not 0: the saved parse was not used",
        "dbt-test did not run: its parse cannot be checked",
    ]


def test_a_dbt_pod_without_perf_info_fails(tmp_path: Path):
    executor, result = _dbt_run(tmp_path, None, "")
    assert check_saved_parse(executor, result, ("dbt-build",)) == [
        "dbt-build: dbt parsed None of None files (perf_info.json: missing), not 0: the saved parse was not used"]
