"""`make bench` (issue 8) runs end to end, at a tiny size, and its correctness checks hold.

Timings are not asserted here (they are `make bench`'s to print, on a quiet machine); what this
proves is that the bench measures every case it promises, writes them as JSON, and that its checks
pass: ingest and the row-by-row baseline end with the same rows and checksum, re-ingesting adds no
row, the half-overlapping file loads only its new half, and the incremental fact table equals a
full refresh.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.integration
def test_the_bench_measures_every_case_and_its_checks_pass(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "CONTRIBFLOW_"))}
    done = subprocess.run(
        [sys.executable, "bench/run.py", "--sizes", "3000", "--history", "100000", "--runs", "2000",
         "--verify-runs", "20", "--repeats", "2",
         "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    report = json.loads(out.read_text())
    measured = {m["case"]: m for m in report["measures"]}
    assert set(measured) == {
        "floor (server COPY)", "floor, rows sorted by hash", "floor, rows in load order", "ingest", "re-ingest", "overlap ½",
        "baseline (row by row)",
        "dbt fct incremental @100k", "dbt fct full refresh @100k", "dbt start-up per invocation",
        "trace one declaration @100k",
        "publish of a 100k day @100k", "bare import of dbt + adapter", "daily run 2k: wall",
        "daily run 2k: steps' work", "daily run 2k: fixed cost", "dbt-build fixed cost @2k",
        "dbt-test fixed cost @2k", "verify 20 runs", "reproduce a publication @100k",
    }
    assert measured["ingest"]["rows"] == 3000 and measured["ingest"]["peak_rss_mb"] > 0
    # The targets' ratio is to the floor in file order, not to the sorted one shown beside it.
    assert measured["ingest"]["floor_s"] == measured["floor (server COPY)"]["wall_s"]
    for case in ("floor, rows sorted by hash", "floor, rows in load order"):
        assert measured[case]["floor_s"] == measured["floor (server COPY)"]["wall_s"]
    assert measured["baseline (row by row)"]["extrapolated"] is False
    # Each timed case ran twice and reports the median of its samples; single cases ran once.
    for case in ("ingest", "floor (server COPY)", "floor, rows sorted by hash", "floor, rows in load order",
                 "baseline (row by row)",
                 "dbt fct incremental @100k", "dbt fct full refresh @100k"):
        samples = measured[case]["samples"]
        assert len(samples) == 2 and measured[case]["wall_s"] == pytest.approx(sum(samples) / 2), case
    assert len(measured["dbt start-up per invocation"]["samples"]) == 4
    assert len(measured["re-ingest"]["samples"]) == 1
    assert report["repeats"] == 2 and report["large_repeats"] == 1
    # chain entries: 38 records per run, and init-db's own step
    assert measured["verify 20 runs"]["rows"] == 20 * 38 + 1
    assert len(report["checks"]) == 9 and all(c["ok"] for c in report["checks"]), report["checks"]
    checks = {c["name"] for c in report["checks"]}
    assert "reproduce @100k: both marts identical to the record" in checks, checks
    assert any(name.startswith("publish @100k: history and hashes") for name in checks), checks
    assert {t["name"] for t in report["targets"]} >= {
        "ingest 3k <= 1.0x the hash-ordered floor", "ingest 3k >= 20x faster than baseline",
        "ingest peak RSS <= 200 MB", "re-ingest 3k <= 0.5 s", "daily run 2k: fixed cost <= 6 s",
        "dbt-build fixed cost @2k <= 1.5 s above the bare import",
        "dbt-test fixed cost @2k <= 1.5 s above the bare import"}
    # The whole run's split: its wall time is the steps' work plus the fixed cost.
    run = {k: measured[f"daily run 2k: {k}"] for k in ("wall", "steps' work", "fixed cost")}
    assert len(run["wall"]["samples"]) == 2
    for wall, work, fixed in zip(*(run[k]["samples"] for k in ("wall", "steps' work", "fixed cost"))):
        assert 0 < work < wall and fixed == pytest.approx(wall - work)
    assert "floor (server COPY)" in done.stdout and "[ok] ingest 3000: nothing lost" in done.stdout
