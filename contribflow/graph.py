"""The stage graph, defined once: Hera renders it into Argo objects, ``contribflow run`` executes it.

Arguments are written with placeholders, which each executor fills its own way:
``{param:run-date}`` is a run parameter (Argo: ``{{workflow.parameters.run-date}}``),
``{output:pick.file}`` is an output of an upstream stage (Argo:
``{{tasks.pick.outputs.parameters.file}}``; locally, the file that stage wrote), and
``{workflow:status}`` is the outcome of the whole run, known to the exit handler only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

PLACEHOLDER = re.compile(r"\{(param|output|workflow):([a-z0-9-]+)(?:\.([a-z0-9_]+))?\}")

PARAMETERS: dict[str, str] = {
    "run-date": "",
    "rows": "10000",
    "defect-rate": "0.01",
    "generate": "true",
}


@dataclass(frozen=True)
class Stage:
    name: str
    image: str
    args: tuple[str, ...]
    depends: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    db_role: str = "loader"
    """The database role the stage connects as (least privilege): migrator, loader or transformer."""
    needs_pseudonym_key: bool = False
    needs_landing: bool = False
    needs_dbt_target: bool = False
    when: str | None = None
    """A run parameter that must be "true" for the stage to run (otherwise it is skipped)."""
    retry_transient: bool = True
    """Retry only failures that may pass (network, a server restarting); never data-quality ones."""
    waits_for_file: bool = False
    """The stage waits for a late source file: retried on its own exit code (76) until the deadline
    (Argo), or polling with ``--wait`` (``contribflow run``)."""

    @property
    def command(self) -> tuple[str, ...]:
        return ("contribflow", self.name, *self.args)


STAGES: tuple[Stage, ...] = (
    Stage(
        name="init-db",
        image="migrations",
        args=("--date", "{param:run-date}"),
        db_role="migrator",
    ),
    Stage(
        name="generate",
        image="generate",
        args=("--date", "{param:run-date}", "--rows", "{param:rows}",
              "--defect-rate", "{param:defect-rate}"),
        depends=("init-db",),
        needs_landing=True,
        when="generate",
    ),
    Stage(
        name="pick",
        image="ingest",
        args=("--date", "{param:run-date}"),
        depends=("generate",),
        outputs=("file", "error_class", "completion"),
        needs_landing=True,
        waits_for_file=True,
    ),
    Stage(
        name="ingest",
        image="ingest",
        args=("--date", "{param:run-date}", "--file", "{output:pick.file}"),
        depends=("pick",),
        outputs=("rows_in", "rows_loaded", "rows_rejected", "volume"),
        needs_pseudonym_key=True,
        needs_landing=True,
    ),
    Stage(
        name="dbt-build",
        image="dbt",
        args=("--date", "{param:run-date}"),
        depends=("ingest",),
        outputs=("models_ok", "models_failed", "build_id"),
        db_role="transformer",
        needs_dbt_target=True,
    ),
    Stage(
        name="dbt-test",
        image="dbt",
        args=("--date", "{param:run-date}"),
        depends=("dbt-build",),
        outputs=("tests_passed", "tests_failed", "freshness"),
        db_role="transformer",
        needs_dbt_target=True,
        retry_transient=False,
    ),
    Stage(
        name="publish",
        image="dbt",
        args=("--date", "{param:run-date}"),
        depends=("dbt-test",),
        outputs=("fct_rows_inserted", "dim_rows"),
        db_role="transformer",
    ),
)


APPLY_PARAMETERS: dict[str, str] = {"request-id": ""}
APPLY_STAGES: tuple[Stage, ...] = (
    Stage(
        name="apply",
        image="ingest",  # a re-process or re-load ingests a file: the image with the ingest stack
        args=("{param:request-id}", "--no-publish"),
        outputs=("run_date", "rebuild"),
        db_role="migrator",
        needs_pseudonym_key=True,
        needs_landing=True,
        retry_transient=True,
    ),
    *(Stage(name=s.name, image=s.image, args=("--date", "{output:apply.run_date}"),
            depends=("apply",) if s.name == "dbt-build" else s.depends, outputs=s.outputs, db_role=s.db_role,
            needs_dbt_target=s.needs_dbt_target, retry_transient=s.retry_transient, when="apply.rebuild")
      for s in STAGES if s.db_role == "transformer"),
)
"""``contribflow-apply-request`` (issue 28): an approved correction request applied
(``contribflow apply ID --no-publish``), then, when it changes the marts (output ``rebuild``), the
day rebuilt and published through write-audit-publish by the daily graph's own stages.
``contribflow apply ID`` runs the same stages locally. ``when`` here names an upstream output."""


EXIT_STAGE = Stage(
    name="finish",
    image="migrations",
    args=("--date", "{param:run-date}", "--status", "{workflow:status}"),
    outputs=("run_succeeded", "sla_met", "sla_missed", "file_seconds_late", "quarantine_ratio",
             "volume_warning", "publication_age_seconds",
             "marts_published_timestamp_seconds", "marts_published_run_date_seconds",
             "file_latest_run_date_seconds", "run_finished_timestamp_seconds",
             "audit_chain_seq", "audit_chain_head"),
)
"""The exit handler: runs after every run, whatever happened, and records the run's outcome."""


def by_name(stages: Iterable[Stage] = STAGES) -> dict[str, Stage]:
    return {s.name: s for s in stages}


def topological_order(stages: Iterable[Stage] = STAGES) -> list[Stage]:
    """Stages in dependency order; a cycle or an unknown dependency is an error."""
    pending = by_name(stages)
    for stage in pending.values():
        unknown = set(stage.depends) - pending.keys()
        if unknown:
            raise ValueError(f"stage {stage.name!r} depends on unknown stage(s) {sorted(unknown)}")
    done: list[Stage] = []
    seen: set[str] = set()
    while pending:
        ready = [s for s in pending.values() if set(s.depends) <= seen]
        if not ready:
            raise ValueError(f"stage graph has a cycle among {sorted(pending)}")
        for stage in ready:
            done.append(stage)
            seen.add(stage.name)
            del pending[stage.name]
    return done


def render_args(args: Iterable[str], resolve: Callable[[str, str, str | None], str]) -> list[str]:
    """Replace each placeholder with ``resolve(kind, name, output)``."""
    return [PLACEHOLDER.sub(lambda m: resolve(m.group(1), m.group(2), m.group(3)), a) for a in args]
