"""`make lint-chart`: every check of the chart that needs no cluster, for every values scenario.

1. ``helm lint --strict`` with the scenario's values (the chart defaults, then helm/contribflow/ci/*.yaml);
2. ``helm template`` of the scenario, split into one file per object under OUT/<scenario>/;
3. built-in kinds: ``kubernetes-validate --strict`` for Kubernetes 1.30 (unknown fields are errors);
4. Argo kinds: tests/argo_schema.py (the strict Argo Workflows v4.1.2 and Argo Events v1.9.11 checks,
   shared, not copied: an EventSource or Sensor against the Argo Events schema);
5. checkov (kubernetes and argo_workflows frameworks, offline) on all of OUT, with the skips and their
   reasons in helm/checkov.yaml: zero failed checks.

Usage: lint_chart.py --helm H --kubernetes-validate KV --checkov CK [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "contribflow"
CHECKOV_CONFIG = ROOT / "helm" / "checkov.yaml"
KUBERNETES_VERSION = "1.30.0"
RELEASE = "contribflow"
NAMESPACE = "contribflow"
sys.path.insert(0, str(ROOT / "tests"))


def scenarios() -> dict[str, list[str]]:
    """Scenario name → extra helm arguments."""
    found = {"defaults": []}
    for values in sorted((CHART / "ci").glob("*.yaml")):
        found[values.stem] = ["--values", str(values)]
    return found


def run(cmd: list[str], what: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise SystemExit(f"lint-chart: {what} failed (exit {result.returncode}):\n"
                         f"{result.stdout[-4000:]}{result.stderr[-4000:]}")
    return result.stdout


def split(manifest: str, into: Path) -> tuple[list[Path], list[dict]]:
    """One file per built-in object (for kubernetes-validate and checkov); Argo objects returned."""
    into.mkdir(parents=True, exist_ok=True)
    builtin, argo = [], []
    for doc in yaml.safe_load_all(manifest):
        if not doc:
            continue
        name = f"{doc['kind'].lower()}-{doc['metadata']['name']}.yaml"
        path = into / name
        path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        if str(doc.get("apiVersion", "")).startswith("argoproj.io/"):
            argo.append(doc)
        else:
            builtin.append(path)
    return builtin, argo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", required=True)
    parser.add_argument("--kubernetes-validate", required=True)
    parser.add_argument("--checkov", required=True)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.out:
        return lint(args, args.out)
    with tempfile.TemporaryDirectory(prefix="contribflow-chart-") as tmp:
        return lint(args, Path(tmp))


def lint(args: argparse.Namespace, out: Path) -> int:
    from argo_schema import check_all_argo

    for scenario, extra in scenarios().items():
        run([args.helm, "lint", "--strict", str(CHART), *extra], f"helm lint --strict ({scenario})")
        manifest = run([args.helm, "template", RELEASE, str(CHART), "--namespace", NAMESPACE, *extra],
                       f"helm template ({scenario})")
        builtin, argo = split(manifest, out / scenario)
        run([args.kubernetes_validate, "--strict", "--quiet", "--kubernetes-version", KUBERNETES_VERSION,
             *map(str, builtin)], f"kubernetes-validate --strict {KUBERNETES_VERSION} ({scenario})")
        try:
            checked = check_all_argo(argo)
        except ValueError as error:
            raise SystemExit(f"lint-chart: Argo schema ({scenario}): {error}") from None
        print(f"lint-chart: {scenario}: helm lint --strict ok; {len(builtin)} built-in objects valid for "
              f"Kubernetes {KUBERNETES_VERSION}; Argo objects valid (strict): "
              + ", ".join(f"{count} {name}" for name, count in checked.items()))
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE", "CKV_SKIP_PACKAGE_UPDATE_CHECK": "true",
           "LOG_LEVEL": "ERROR"}
    report = run([args.checkov, "--config-file", str(CHECKOV_CONFIG), "--directory", str(out),
                  "--skip-download", "--compact", "--quiet"], "checkov", env=env)
    print("lint-chart: checkov: " + " ".join(line.strip() for line in report.splitlines()
                                             if line.startswith(("kubernetes", "argo", "Passed"))) or "ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
