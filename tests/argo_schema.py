"""Offline validation of Argo manifests, strictly: Argo Workflows v4.1.2 and Argo Events v1.9.11.

Reusable by any test that renders Argo objects (the Hera workflows, the Helm chart): it imports
nothing from contribflow. Each Argo object is checked three ways, against the schema set of its
kind (``WORKFLOWS``: Workflow, WorkflowTemplate, CronWorkflow…; ``EVENTS``: EventSource, Sensor,
EventBus):

1. the JSON Schema ``schema.json`` (with ``IntOrString`` widened to string|integer, its known quirk);
2. the CustomResourceDefinition's ``openAPIV3Schema`` (what a cluster validates against), for the
   kinds whose CRD is present (Argo Events' CRDs preserve unknown fields: the JSON schema is the
   only real check of an EventSource or Sensor);
3. a strict check against both: every key of the document must be a declared property (or fall
   under ``additionalProperties`` / ``x-kubernetes-preserve-unknown-fields``), as the API
   server's strict field validation does; neither schema says ``additionalProperties: false``, so
   without this a misspelled field would pass.

    from argo_schema import ArgoSchema, EVENTS, argo_errors, check_all_argo
    errors = ArgoSchema().errors(doc)          # [] when valid; each error names where and what
    ArgoSchema().check_all(yaml.safe_load_all(text))   # raises ValueError listing every error
    ArgoSchema(schema_set=EVENTS).errors(sensor)       # the Argo Events set
    check_all_argo(docs)                       # every Argo object, each against its own set

The schema folder is the set's environment variable (``$ARGO_SCHEMA_DIR``, ``$ARGO_EVENTS_SCHEMA_DIR``),
else ``reference_dir(<set>)`` (tests/reference.py: ``../shared/<set>`` beside the clone, else
``.reference/<set>`` that `make reference-data` fills).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from reference import reference_dir

API_GROUP = "argoproj.io"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"


@dataclass(frozen=True)
class SchemaSet:
    """One upstream project's schemas: its reference set, definition prefix, CRD files and kinds."""

    name: str  # the reference set (scripts/reference_data.py)
    env: str  # the environment variable that may point at another folder
    prefix: str  # the JSON schema's definition prefix of the project's kinds
    crd_files: dict[str, str]  # kind → file under crds/
    kinds: frozenset[str]  # the kinds this set validates (check_all_argo dispatches on them)


WORKFLOWS = SchemaSet(
    "argo-v4.1.2", "ARGO_SCHEMA_DIR", "io.argoproj.workflow.v1alpha1.",
    {"Workflow": "workflows.yaml", "WorkflowTemplate": "workflowtemplates.yaml",
     "CronWorkflow": "cronworkflows.yaml"},
    frozenset({"Workflow", "WorkflowTemplate", "CronWorkflow", "ClusterWorkflowTemplate", "WorkflowEventBinding"}))
EVENTS = SchemaSet(
    "argo-events-v1.9.11", "ARGO_EVENTS_SCHEMA_DIR", "io.argoproj.events.v1alpha1.",
    {"EventSource": "eventsources.yaml", "Sensor": "sensors.yaml", "EventBus": "eventbus.yaml"},
    frozenset({"EventSource", "Sensor", "EventBus"}))
SCHEMA_SETS = (WORKFLOWS, EVENTS)

# The Argo Workflows set's names, as earlier callers import them.
SCHEMA_SET = WORKFLOWS.name
DEFINITION_PREFIX = WORKFLOWS.prefix
CRD_FILES = WORKFLOWS.crd_files


def is_argo(doc: Any) -> bool:
    return isinstance(doc, dict) and str(doc.get("apiVersion", "")).split("/")[0] == API_GROUP


def _where(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out or "."


class ArgoSchema:
    def __init__(self, schema_dir: Path | str | None = None, schema_set: SchemaSet = WORKFLOWS) -> None:
        self.set = schema_set
        self.schema_dir = Path(schema_dir or os.environ.get(schema_set.env) or reference_dir(schema_set.name))
        schema_file = self.schema_dir / "schema.json"
        if not schema_file.is_file():
            raise FileNotFoundError(f"{schema_set.name} JSON schema not found at {schema_file} (set "
                                    f"{schema_set.env}, or unset it and run `make reference-data`)")
        raw = json.loads(schema_file.read_text(encoding="utf-8"))
        self.definitions: dict[str, Any] = copy.deepcopy(raw["definitions"])
        self.definitions[INT_OR_STRING] = {"type": ["string", "integer"]}
        self._json_validators: dict[str, Any] = {}
        self._crd_schemas: dict[str, Any] = {}

    # --- the three checks ----------------------------------------------------------------------

    def errors(self, doc: dict[str, Any]) -> list[str]:
        """Every problem with one Argo object; [] when it is valid."""
        if not is_argo(doc):
            return [f"not an Argo object (apiVersion {doc.get('apiVersion')!r})"]
        kind = str(doc.get("kind"))
        label = f"{kind}/{(doc.get('metadata') or {}).get('name', '?')}"
        definition = self.set.prefix + kind
        if definition not in self.definitions:
            return [f"{label}: unknown kind {kind!r} for {self.set.name}"]
        found = [f"{label}: schema.json {_where(e.absolute_path)}: {e.message}"
                 for e in self._json_validator(definition).iter_errors(doc)]
        found += [f"{label}: strict (schema.json) {msg}"
                  for msg in self._unknown_keys(doc, {"$ref": f"#/definitions/{definition}"}, [])]
        crd = self._crd_schema(kind)
        if crd is not None:
            found += [f"{label}: CRD {_where(e.absolute_path)}: {e.message}"
                      for e in jsonschema.Draft7Validator(crd).iter_errors(doc)]
            found += [f"{label}: strict (CRD) {msg}" for msg in self._unknown_keys(doc, crd, [])]
        return found

    def check_all(self, docs: Iterable[Any]) -> int:
        """Validate every Argo object among ``docs`` (others are skipped); raise listing all errors.
        Returns how many Argo objects were checked."""
        checked, problems = 0, []
        for doc in docs:
            if is_argo(doc):
                checked += 1
                problems += self.errors(doc)
        if problems:
            raise ValueError("invalid Argo manifest(s):\n  " + "\n  ".join(problems))
        return checked

    def check_file(self, path: Path | str) -> int:
        return self.check_all(yaml.safe_load_all(Path(path).read_text(encoding="utf-8")))

    # --- internals -------------------------------------------------------------------------------

    def _json_validator(self, definition: str):
        if definition not in self._json_validators:
            schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
                      "definitions": self.definitions, "$ref": f"#/definitions/{definition}"}
            self._json_validators[definition] = jsonschema.Draft202012Validator(schema)
        return self._json_validators[definition]

    def _crd_schema(self, kind: str) -> dict[str, Any] | None:
        if kind not in self.set.crd_files:
            return None
        if kind not in self._crd_schemas:
            crd = yaml.safe_load((self.schema_dir / "crds" / self.set.crd_files[kind]).read_text(encoding="utf-8"))
            versions = {v["name"]: v for v in crd["spec"]["versions"]}
            self._crd_schemas[kind] = versions["v1alpha1"]["schema"]["openAPIV3Schema"]
        return self._crd_schemas[kind]

    def _resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.definitions[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def _unknown_keys(self, value: Any, schema: dict[str, Any], path: list[Any]) -> list[str]:
        schema = self._resolve(schema)
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return []
        found: list[str] = []
        if isinstance(value, dict):
            props = schema.get("properties")
            extra = schema.get("additionalProperties")
            if props is None and extra is None:
                return []  # a free-form object (e.g. the CRD's metadata)
            for key, item in value.items():
                if props is not None and key in props:
                    found += self._unknown_keys(item, props[key], [*path, key])
                elif isinstance(extra, dict):
                    found += self._unknown_keys(item, extra, [*path, key])
                elif extra is True:
                    continue
                else:
                    close = difflib.get_close_matches(key, list(props or ()), n=1)
                    hint = f" (did you mean {close[0]!r}?)" if close else ""
                    found.append(f"{_where([*path, key])}: unknown field {key!r}{hint}")
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for index, item in enumerate(value):
                found += self._unknown_keys(item, schema["items"], [*path, index])
        return found


@cache
def default_schema() -> ArgoSchema:
    return ArgoSchema()


@cache
def events_schema() -> ArgoSchema:
    return ArgoSchema(schema_set=EVENTS)


def schema_for(doc: dict[str, Any]) -> ArgoSchema:
    """The schema of an Argo object's kind: Argo Events' for EventSource/Sensor/EventBus, else Workflows'."""
    return events_schema() if doc.get("kind") in EVENTS.kinds else default_schema()


def argo_errors(doc: dict[str, Any]) -> list[str]:
    """Every problem with one Argo object (of either project); [] when valid."""
    return schema_for(doc).errors(doc)


def check_all_argo(docs: Iterable[Any]) -> dict[str, int]:
    """Validate every Argo object among ``docs`` against its own project's schema; raise ValueError
    listing every error. Returns how many objects of each set were checked."""
    checked = {s.name: 0 for s in SCHEMA_SETS}
    problems: list[str] = []
    for doc in docs:
        if is_argo(doc):
            schema = schema_for(doc)
            checked[schema.set.name] += 1
            problems += schema.errors(doc)
    if problems:
        raise ValueError("invalid Argo manifest(s):\n  " + "\n  ".join(problems))
    return checked
