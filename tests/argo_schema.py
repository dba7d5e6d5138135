"""Offline validation of Argo Workflows manifests against the Argo v4.1.2 schemas, strictly.

Reusable by any test that renders Argo objects (the Hera workflows, the Helm chart): it imports
nothing from contribflow. Each Argo object is checked three ways:

1. the JSON Schema ``schema.json`` (with ``IntOrString`` widened to string|integer, its known quirk);
2. the CustomResourceDefinition's ``openAPIV3Schema`` (what a cluster validates against), for the
   kinds whose CRD is present (Workflow, WorkflowTemplate, CronWorkflow);
3. a strict check against both: every key of the document must be a declared property (or fall
   under ``additionalProperties`` / ``x-kubernetes-preserve-unknown-fields``), as the API
   server's strict field validation does; neither schema says ``additionalProperties: false``, so
   without this a misspelled field would pass.

    from argo_schema import ArgoSchema
    errors = ArgoSchema().errors(doc)          # [] when valid; each error names where and what
    ArgoSchema().check_all(yaml.safe_load_all(text))   # raises ValueError listing every error

The schema folder is ``$ARGO_SCHEMA_DIR``, else ``reference_dir("argo-v4.1.2")`` (tests/reference.py:
``../shared/argo-v4.1.2`` beside the clone, else ``.reference/argo-v4.1.2`` that `make reference-data` fills).
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from reference import reference_dir

SCHEMA_SET = "argo-v4.1.2"
API_GROUP = "argoproj.io"
DEFINITION_PREFIX = "io.argoproj.workflow.v1alpha1."
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
CRD_FILES = {"Workflow": "workflows.yaml", "WorkflowTemplate": "workflowtemplates.yaml",
             "CronWorkflow": "cronworkflows.yaml"}


def is_argo(doc: Any) -> bool:
    return isinstance(doc, dict) and str(doc.get("apiVersion", "")).split("/")[0] == API_GROUP


def _where(path: Iterable[Any]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out or "."


class ArgoSchema:
    def __init__(self, schema_dir: Path | str | None = None) -> None:
        self.schema_dir = Path(schema_dir or os.environ.get("ARGO_SCHEMA_DIR") or reference_dir(SCHEMA_SET))
        schema_file = self.schema_dir / "schema.json"
        if not schema_file.is_file():
            raise FileNotFoundError(f"Argo JSON schema not found at {schema_file} (set ARGO_SCHEMA_DIR, "
                                    "or unset it and run `make reference-data`)")
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
        definition = DEFINITION_PREFIX + kind
        if definition not in self.definitions:
            return [f"{label}: unknown Argo kind {kind!r}"]
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
        if kind not in CRD_FILES:
            return None
        if kind not in self._crd_schemas:
            crd = yaml.safe_load((self.schema_dir / "crds" / CRD_FILES[kind]).read_text(encoding="utf-8"))
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
