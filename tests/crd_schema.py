"""Offline, strict validation of a custom resource against its CustomResourceDefinition's
``openAPIV3Schema`` (what the API server validates), as tests/argo_schema.py does for Argo's kinds:
JSON Schema errors, and every key of the object a declared property (or under
``additionalProperties`` / ``x-kubernetes-preserve-unknown-fields``): the server's strict field
validation refuses the rest, and without this check a misspelled field would pass.

    from crd_schema import CrdSchema
    schema = CrdSchema(reference_dir("prometheus-operator-v0.93.0") / "crds" / "prometheusrules.yaml")
    schema.errors(doc)    # [] when valid; each error names where and what
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import jsonschema
import yaml


def _where(path: list[Any]) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path) or "."


class CrdSchema:
    def __init__(self, crd_file: Path | str) -> None:
        crd = yaml.safe_load(Path(crd_file).read_text(encoding="utf-8"))
        self.group = crd["spec"]["group"]
        self.kind = crd["spec"]["names"]["kind"]
        self.versions = {v["name"]: v["schema"]["openAPIV3Schema"] for v in crd["spec"]["versions"]
                         if v.get("served", True)}

    def errors(self, doc: dict[str, Any]) -> list[str]:
        group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
        label = f"{doc.get('kind')}/{(doc.get('metadata') or {}).get('name', '?')}"
        if group != self.group or doc.get("kind") != self.kind or version not in self.versions:
            return [f"{label}: not a {self.kind} of {self.group} (versions {', '.join(self.versions)})"]
        schema = self.versions[version]
        found = [f"{label}: CRD {_where(list(e.absolute_path))}: {e.message}"
                 for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
        found += [f"{label}: strict (CRD) {msg}" for msg in unknown_keys(doc, schema, [])]
        return found


def unknown_keys(value: Any, schema: dict[str, Any], path: list[Any]) -> list[str]:
    """Every key of ``value`` its schema does not declare."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        if props is None and extra is None:
            return []  # a free-form object (the CRD's metadata)
        for key, item in value.items():
            if props is not None and key in props:
                found += unknown_keys(item, props[key], [*path, key])
            elif isinstance(extra, dict):
                found += unknown_keys(item, extra, [*path, key])
            elif extra is True:
                continue
            else:
                close = difflib.get_close_matches(key, list(props or ()), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                found.append(f"{_where([*path, key])}: unknown field {key!r}{hint}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += unknown_keys(item, schema["items"], [*path, index])
    return found
