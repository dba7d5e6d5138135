"""The step record tells its listeners (contribflow/step.py): what a stage declared, its outcome, and
a listener that fails never fails the step."""

from __future__ import annotations

import datetime as dt

import pytest

from contribflow.settings import Settings
from contribflow.step import Dataset, StepRun, add_listener, remove_listener
from contribflow.warehouse import migrate

pytestmark = pytest.mark.integration
DAY = dt.date(2026, 11, 2)


class Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str, list[str], list[tuple[str, int | None]]]] = []

    def step_started(self, step: StepRun) -> None:
        self.seen.append(("started", step.step, step.status, [d.name for d in step.reads], []))

    def step_finished(self, step: StepRun) -> None:
        self.seen.append(("finished", step.step, step.status, [d.name for d in step.reads],
                          [(d.name, d.rows) for d in step.writes]))


class Broken:
    def step_started(self, step: StepRun) -> None:
        raise RuntimeError("listener down")

    def step_finished(self, step: StepRun) -> None:
        raise RuntimeError("listener down")


@pytest.fixture
def listeners():
    recorder, broken = Recorder(), Broken()
    add_listener(broken)
    add_listener(recorder)
    add_listener(recorder)  # once, however often added
    yield recorder
    remove_listener(broken)
    remove_listener(recorder)


def test_listeners_see_what_the_stage_declared_and_a_failing_one_fails_nothing(database, sql, listeners):
    settings = Settings.from_env()
    migrate.run(settings, DAY)
    listeners.seen.clear()
    with StepRun(settings, "probe", DAY, reads=[Dataset("landing.csv", kind="file")]) as step:
        written = Dataset("raw.contributions")
        step.writes.append(written)
        written.rows = 7
    assert listeners.seen == [("started", "probe", "RUNNING", ["landing.csv"], []),
                              ("finished", "probe", "SUCCESS", ["landing.csv"], [("raw.contributions", 7)])]
    with pytest.raises(ValueError), StepRun(settings, "probe-fails", DAY):
        raise ValueError("the stage's own error")
    assert listeners.seen[-1][:3] == ("finished", "probe-fails", "FAILED")
    assert sql("select step, status from meta.etl_run where step like 'probe%%' order by id") == [
        ("probe", "SUCCESS"), ("probe-fails", "FAILED")]
