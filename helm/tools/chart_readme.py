"""The chart's README, generated from values.yaml: each key's `# --` comment (helm-docs style), its
type and its default, so the documentation of a value lives next to the value.

    python helm/tools/chart_readme.py           # write helm/contribflow/README.md
    python helm/tools/chart_readme.py --check   # fail when it differs from what values.yaml gives

helm-docs does this in Go and is not in any registry these machines reach; this reads the same
comments. A key documented as a whole (a `# --` on a mapping) is one row; keys below it without a
`# --` of their own (a Kubernetes `resources:` block) are part of that row's default.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1] / "contribflow"
VALUES = CHART / "values.yaml"
README = CHART / "README.md"
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z0-9_.-]+):(?:\s|$)")
_DOC = re.compile(r"^ *# -- ?(?P<text>.*)$")
_MORE = re.compile(r"^ *# (?P<text>.*)$")


def documented_keys(text: str) -> list[tuple[str, str]]:
    """(dotted key path, description) for every key with a `# --` comment above it, in file order."""
    rows: list[tuple[str, str]] = []
    path: list[tuple[int, str]] = []
    pending: list[str] | None = None
    for line in text.splitlines():
        if (doc := _DOC.match(line)) is not None:
            pending = [doc.group("text").strip()]
            continue
        if pending is not None and (more := _MORE.match(line)) is not None and not _DOC.match(line):
            pending.append(more.group("text").strip())
            continue
        if (key := _KEY.match(line)) is None:
            if not line.strip().startswith("#"):
                pending = None if line.strip() == "" else pending
            continue
        indent = len(key.group("indent"))
        path = [(i, k) for i, k in path if i < indent] + [(indent, key.group("key"))]
        if pending is not None:
            rows.append((".".join(k for _, k in path), " ".join(pending)))
        pending = None
    return rows


def _lookup(values: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        values = values[part]
    return values


def _type(value: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "string", list: "list", dict: "object"}.get(
        type(value), "null" if value is None else type(value).__name__)


def render() -> str:
    text = VALUES.read_text(encoding="utf-8")
    values = yaml.safe_load(text)
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    lines = [
        f"# {chart['name']}",
        "",
        " ".join(chart["description"].split()),
        "",
        f"Chart version {chart['version']}, app version {chart['appVersion']}; Kubernetes "
        f"`{chart['kubeVersion']}`; {chart['annotations']['contribflow.io/requires']}.",
        "",
        "Generated from `values.yaml` by `helm/tools/chart_readme.py` (`make chart-readme`); a check in "
        "`make test` fails when it is out of date. `values.schema.json` types every key and refuses "
        "unknown ones.",
        "",
        "## Values",
        "",
        "| key | type | default | description |",
        "|---|---|---|---|",
    ]
    for dotted, description in documented_keys(text):
        value = _lookup(values, dotted)
        default = json.dumps(value, ensure_ascii=False).replace("|", "\\|")
        lines.append(f"| `{dotted}` | {_type(value)} | `{default}` | {description.replace('|', chr(92) + '|')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    wanted = render()
    if "--check" in argv:
        if not README.exists() or README.read_text(encoding="utf-8") != wanted:
            print(f"{README.relative_to(CHART.parents[1])} is out of date: run make chart-readme", file=sys.stderr)
            return 1
        return 0
    README.write_text(wanted, encoding="utf-8")
    print(f"chart_readme: wrote {README.relative_to(CHART.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
