"""The chart's alert rules, checked by Prometheus's own promtool (Debian package `prometheus`).

    python helm/tools/alert_rules.py --helm .tools/bin/helm [--promtool promtool] [--out build/alerts]

Renders the chart with monitoring.prometheusRule.enabled=true, writes the PrometheusRule's groups as
a plain rule file (OUT/rules.yaml), copies the unit tests tests/alerts/*.yaml beside it (their
`rule_files` say `rules.yaml`), then runs `promtool check rules` and `promtool test rules`. Exit 0
when both pass; their output otherwise. `make test-alerts` runs it; tests/test_alerts.py too.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "contribflow"
TESTS = ROOT / "tests" / "alerts"
ENABLE = ("--set", "monitoring.prometheusRule.enabled=true")


def render(helm: str, *args: str) -> list[dict[str, Any]]:
    """The PrometheusRule objects the chart renders with the rule enabled (and ``args``)."""
    done = subprocess.run([helm, "template", "contribflow", str(CHART), "--namespace", "contribflow",
                           *ENABLE, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"alert_rules: helm template failed:\n{done.stderr}")
    return [d for d in yaml.safe_load_all(done.stdout) if d and d.get("kind") == "PrometheusRule"]


def write(rule: dict[str, Any], out: Path, tests: Path = TESTS) -> list[Path]:
    """OUT/rules.yaml from the PrometheusRule, and the unit tests beside it; the tests' paths."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    copied = []
    for test in sorted(tests.glob("*.yaml")):
        shutil.copyfile(test, out / test.name)
        copied.append(out / test.name)
    return copied


def promtool(promtool_bin: str, out: Path, tests: list[Path]) -> subprocess.CompletedProcess:
    """`promtool check rules` then `promtool test rules`: the first failure's result, else the last."""
    check = subprocess.run([promtool_bin, "check", "rules", str(out / "rules.yaml")],
                           capture_output=True, text=True)
    if check.returncode != 0 or not tests:
        return check
    return subprocess.run([promtool_bin, "test", "rules", *(t.name for t in tests)], cwd=out,
                          capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", required=True)
    parser.add_argument("--promtool", default="promtool")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "alerts")
    args = parser.parse_args(argv)
    rules = render(args.helm)
    if len(rules) != 1:
        print(f"alert_rules: expected one PrometheusRule, the chart rendered {len(rules)}", file=sys.stderr)
        return 1
    tests = write(rules[0], args.out)
    if not tests:
        print(f"alert_rules: no unit tests in {TESTS}", file=sys.stderr)
        return 1
    done = promtool(args.promtool, args.out, tests)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
