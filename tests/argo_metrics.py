"""The metrics the rendered workflows emit, as Prometheus stores them: read from workflows/rendered/*.yaml
(never a copy of the list), each name under Argo's prefix.

Argo Workflows (v3.6 and later, so v4) prepends ``argo_workflows_`` to every custom metric on its
Prometheus endpoint (docs/workflow-telemetry.md: "Metric name (will be prepended with
"argo_workflows_")"; its e2e tests scrape a custom ``result_counter`` as ``argo_workflows_result_counter``)
and, with ``WithoutCounterSuffixes``, adds no ``_total`` to counters. The chart's
``monitoring.metricPrefix`` defaults to the same prefix: tests/test_prometheus_expressions.py checks
that the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from conftest import ROOT

RENDERED = ROOT / "workflows" / "rendered"
ARGO_PREFIX = "argo_workflows_"

# The audit trail's weekly check (workflows/contribflow_audit.py) sets this gauge on its `verify`
# template: 1 intact, 0 broken.
AUDIT_TRAIL_INTACT = "contribflow_audit_trail_intact"


@dataclass(frozen=True)
class Metric:
    """One custom metric a template (or a whole workflow: template None) defines."""

    name: str                    # as the workflow defines it (contribflow_...)
    kind: str                    # gauge, counter or histogram
    labels: tuple[tuple[str, str], ...]  # (key, value as rendered: a literal or an Argo variable)
    workflow: str
    template: str | None

    @property
    def stored(self) -> str:
        """The name Prometheus stores it under."""
        return ARGO_PREFIX + self.name


def _kind(spec: dict) -> str:
    [kind] = [k for k in ("gauge", "counter", "histogram") if k in spec]
    return kind


def _metrics(specs: list[dict], workflow: str, template: str | None) -> list[Metric]:
    return [Metric(s["name"], _kind(s), tuple((lb["key"], lb["value"]) for lb in s.get("labels") or []),
                   workflow, template) for s in specs]


def emitted(rendered: Path = RENDERED) -> list[Metric]:
    """Every metric definition of every rendered workflow (a name defined by several templates, e.g.
    the per-step duration, appears once per template)."""
    found: list[Metric] = []
    for path in sorted(rendered.glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        spec = doc["spec"].get("workflowSpec", doc["spec"])
        name = doc["metadata"]["name"]
        found += _metrics((spec.get("metrics") or {}).get("prometheus", []), name, None)
        for template in spec.get("templates", []):
            found += _metrics((template.get("metrics") or {}).get("prometheus", []), name, template["name"])
    return found


def stored_names(rendered: Path = RENDERED) -> set[str]:
    """The names Prometheus holds for the workflows' metrics."""
    return {m.stored for m in emitted(rendered)}
