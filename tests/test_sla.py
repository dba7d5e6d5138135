"""The SLA (issue 29): what finish records for each run, in meta.run_sla and as the output
parameters the Argo custom metrics read (workflows/metrics.py)."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT

sys.path.insert(0, str(ROOT))  # the workflows/ package lives at the repo root, not in the installed package
from contribflow import cli, finish  # noqa: E402
from contribflow.finish import Facts  # noqa: E402
from contribflow.graph import EXIT_STAGE  # noqa: E402
from contribflow.local import runner  # noqa: E402
from contribflow.settings import Settings  # noqa: E402
from workflows import metrics  # noqa: E402

DAY = dt.date(2026, 11, 26)
MIDNIGHT = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
SLA = {"CONTRIBFLOW_SLA_FILE_DUE_S": "28800", "CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S": "36000",
       "CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO": "0.02"}


def at(hours: float) -> dt.datetime:
    return MIDNIGHT + dt.timedelta(hours=hours)


def test_an_on_time_run_meets_the_sla_and_each_miss_is_named():
    settings = Settings.from_env(SLA)
    good = Facts(file_arrived_at=at(7), published_at=at(9), rows_in=1000, rows_quarantined=20)
    outcome = finish.evaluate(settings, DAY, True, good, now=at(9.5))
    assert outcome.met and outcome.missed == () and outcome.file_seconds_late == 0
    assert outcome.quarantine_ratio == 0.02 and outcome.file_due_at == at(8)
    assert outcome.publish_deadline_at == at(10)

    late = Facts(file_arrived_at=at(8.5), published_at=at(10.25), rows_in=1000, rows_quarantined=21)
    outcome = finish.evaluate(settings, DAY, True, late, now=at(11))
    assert outcome.missed == ("file_late", "published_late", "quarantine_ratio") and not outcome.met
    assert outcome.file_seconds_late == 1800

    # never arrived: as late as the run's end is past the due time; nothing published; run failed
    outcome = finish.evaluate(settings, DAY, False, Facts(), now=at(10))
    assert outcome.missed == ("file_late", "not_published", "run_failed")
    assert outcome.file_seconds_late == 7200 and outcome.quarantine_ratio is None


def test_without_sla_settings_only_a_failed_run_misses():
    settings = Settings.from_env({})
    facts = Facts(file_arrived_at=at(30), published_at=at(40), rows_in=10, rows_quarantined=9)
    assert finish.evaluate(settings, DAY, True, facts, now=at(41)).met
    outcome = finish.evaluate(settings, DAY, False, facts, now=at(41))
    assert outcome.missed == ("run_failed",) and outcome.file_seconds_late is None
    assert outcome.quarantine_ratio == 0.9


def test_every_finish_output_is_declared_and_has_a_metric():
    settings = Settings.from_env(SLA)
    facts = Facts(file_arrived_at=at(7), published_at=at(9), rows_in=1000, rows_quarantined=5, volume="low",
                  latest_published_at=at(9), latest_published_date=DAY, latest_file_date=DAY)
    outcome = finish.evaluate(settings, DAY, True, facts, now=at(9.5))
    values = finish.outputs(outcome, facts, True, now=at(9.5))
    assert set(values) == set(EXIT_STAGE.outputs) - set(finish.CHAIN_OUTPUTS)  # those from chain_head
    assert values["volume_warning"] == 1 and values["quarantine_ratio"] == "0.005000"
    assert values["publication_age_seconds"] == 1800 and values["sla_met"] == 1
    assert values["marts_published_run_date_seconds"] == int(MIDNIGHT.timestamp())
    # a metric per output except the text one, and the rendered exit handler emits each
    assert {o for _, o, _, _ in metrics.SLA_METRICS} == set(EXIT_STAGE.outputs) - {"sla_missed", *finish.CHAIN_OUTPUTS}
    rendered = Path(metrics.__file__).parent / "rendered" / "workflowtemplate-contribflow-daily.yaml"
    doc = yaml.safe_load(rendered.read_text())
    exit_template = next(t for t in doc["spec"]["templates"] if t["name"] == EXIT_STAGE.name)
    emitted = {p["name"]: p for p in exit_template["metrics"]["prometheus"]}
    for name, output, _, labels in metrics.SLA_METRICS:
        assert emitted["contribflow_" + name]["gauge"]["value"] == "{{outputs.parameters." + output + "}}"
        assert {lbl["key"] for lbl in emitted["contribflow_" + name].get("labels") or []} == set(labels)


@pytest.mark.integration
def test_finish_records_the_sla_in_meta_and_its_outputs_and_the_audit_shows_it(database, sql, capsys):
    today = dt.datetime.now(dt.UTC).date()
    env = dict(os.environ, CONTRIBFLOW_RUN_ID="run-sla", CONTRIBFLOW_SLA_FILE_DUE_S="172800",
               CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S="172800", CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO="0.5")
    params = {"run-date": today.isoformat(), "rows": "300", "defect-rate": "0.02", "generate": "true"}
    settings = Settings.from_env(env)
    states = {r.stage: r.state for r in runner.run_graph(settings, params, env)}
    assert set(states.values()) == {"ok"}, states
    [(missed, met, late, ratio, rows_in, published)] = sql(
        "select missed, sla_met, file_seconds_late, quarantine_ratio, rows_in, published_at is not null "
        "from meta.run_sla where run_id = 'run-sla'")
    assert (missed, met, late, published) == ([], True, 0, True) and rows_in == 300 and 0 < ratio < 0.5
    [details] = sql("select details from meta.etl_run where step = 'finish' and run_id = 'run-sla'")[0]
    assert details["sla_met"] == 1 and details["run_succeeded"] == 1 and details["file_seconds_late"] == 0
    written = json.loads((runner.outputs_dir(settings, "finish") / "outputs.json").read_text())
    assert written["sla_met"] == "1" and written["marts_published_run_date_seconds"] == str(
        int(finish.midnight(today).timestamp()))
    # the audit chain's head as the run left it (issue 27), and every record of the run sealed intact
    head = sql("select seq, encode(link, 'hex') from meta.audit_chain where seq = %s",
               (int(written["audit_chain_seq"]),))
    assert head == [(int(written["audit_chain_seq"]), written["audit_chain_head"])]
    assert cli.main(["verify"]) == 0 and capsys.readouterr().out.splitlines()[-1].startswith("intact: ")

    # the same date, judged again by a stricter SLA: due at 00:00, a tiny quarantine limit, a failed run
    strict = Settings.from_env(dict(env, CONTRIBFLOW_RUN_ID="run-sla-2", CONTRIBFLOW_SLA_FILE_DUE_S="0",
                                    CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S="0",
                                    CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO="0"))
    with pytest.raises(Exception, match="ended Failed"):
        finish.run(strict, today, "Failed")
    [(missed, met, late)] = sql("select missed, sla_met, file_seconds_late from meta.run_sla "
                                "where run_id = 'run-sla-2'")
    assert missed == ["file_late", "published_late", "quarantine_ratio", "run_failed"] and met is False
    assert late > 0
    [details] = sql("select details from meta.etl_run where step = 'finish' and run_id = 'run-sla-2'")[0]
    assert details["sla_met"] == 0 and details["run_succeeded"] == 0 and details["sla_missed"].endswith("run_failed")

    capsys.readouterr()
    assert cli.main(["audit", "--date", today.isoformat()]) == 0
    audit = capsys.readouterr().out
    assert "SLA (meta.run_sla, recorded by finish)" in audit
    assert "run run-sla  MET  file due " in audit
    assert "run run-sla-2  MISSED: file_late, published_late, quarantine_ratio, run_failed" in audit


@pytest.mark.integration
def test_the_evidence_pack_shows_each_runs_sla_outcome(database, sql, tmp_path):
    import re

    from contribflow.audit import evidence_pack

    today = dt.datetime.now(dt.UTC).date()
    assert cli.main(["init-db", "--date", today.isoformat()]) == 0
    env = dict(os.environ)
    finish.run(Settings.from_env(dict(env, CONTRIBFLOW_RUN_ID="run-met")), today, "Succeeded")
    finish.run(Settings.from_env(dict(env, CONTRIBFLOW_RUN_ID="run-late", CONTRIBFLOW_SLA_FILE_DUE_S="0",
                                      CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S="0")), today, "Succeeded")
    assert sorted(sql("select run_id, sla_met from meta.run_sla")) == [("run-late", False), ("run-met", True)]
    out = tmp_path / "pack.html"
    summary = evidence_pack.run(Settings.from_env(env), today, today, out)
    assert "3 run(s)" in summary  # init-db's, and the two whose finish recorded an SLA outcome
    html = out.read_text()
    rows = re.findall(r'<tr class="sla-run"><td><code>([^<]+)</code></td><td>([^<]+)</td><td>([^<]+)</td>\s*'
                      r'<td class="(MET|MISSED)">([^<]+)</td>\s*<td>([^<]+)</td><td>([^<]+)</td>'
                      r'<td class="num">([^<]+)</td>', html)
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [
        ("run-met", today.isoformat(), "Succeeded", "MET", "met"),
        ("run-late", today.isoformat(), "Succeeded", "MISSED", "missed: file_late, not_published")]
    met, late = rows
    assert met[5] == "-" and met[7] == "-"  # no deadline in force: nothing due, nothing late
    assert late[5].startswith(today.isoformat()) and int(late[7].replace(",", "")) > 0
    assert re.search(r'id="total-sla-missed">1</b>1 met', html)
    assert re.search(r'Run <code>run-late</code> for [^:]+: <span class="SUCCESS">SUCCESS</span>;\s*SLA '
                     r'<span class="MISSED">missed: file_late, not_published</span>', html)
    # a period without any run says so
    empty = tmp_path / "empty.html"
    evidence_pack.run(Settings.from_env(env), today - dt.timedelta(days=30), today - dt.timedelta(days=29), empty)
    assert "No SLA outcome recorded for this period" in empty.read_text()
