"""The source contract as data (issue 15): the source's real export loads whole, a deployment's
overrides take effect, schema drift is a decision, and a day's volume is compared with the usual."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest
import yaml

from contribflow import cli, contract
from contribflow.contract import COLUMNS
from contribflow.generate import rows_for
from contribflow.local import runner
from contribflow.settings import Settings, SettingsError

from conftest import ROOT
from helpers import write_source

DAY = dt.date(2026, 1, 12)
HEADER = ",".join(COLUMNS)


def _row(n: int, taxpayer: str = "TAXP_63976", amount: str = "343.3") -> str:
    return f"DEC_20260112_{n:06d},{taxpayer},2026-01-12,{amount},EUR,INCOME_TAX,DUE,LU"


def test_generate_writes_the_source_systems_own_format():
    rows = list(rows_for(DAY, 2000))
    assert rows[0][0] == "DEC_20260112_000001"
    assert all(re.fullmatch(r"DEC_\d{8}_\d{6}", r[0]) and re.fullmatch(r"TAXP_\d{5}", r[1]) for r in rows)
    amounts = [r[3] for r in rows]
    # pandas writes a float rounded to cents: one decimal where the cents end in 0, never two zeros
    assert any(re.fullmatch(r"\d+\.\d", a) for a in amounts)
    assert all(re.fullmatch(r"\d+\.\d{1,2}", a) and not a.endswith(".00") for a in amounts)
    assert all(float(a) == round(float(a), 2) and repr(float(a)) == a for a in amounts)


def test_the_documented_contract_table_is_what_contribflow_contract_prints(capsys):
    assert cli.main(["contract"]) == 0
    printed = capsys.readouterr().out
    readme = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    table = readme.split("<!-- contract:begin (contribflow contract) -->\n", 1)[1].split("<!-- contract:end -->")[0]
    assert printed.startswith(table)
    assert "Schema drift (an extra column): refuse" in printed


def test_dbt_accepted_values_are_the_contracts_enums():
    """dbt's tests and the contract must not drift apart: each accepted_values list is the contract's."""
    found = {}
    for path in (ROOT / "dbt" / "models").rglob("*.yml"):
        for model in (yaml.safe_load(path.read_text()) or {}).get("models", []):
            for column in model.get("columns", []):
                for test in column.get("data_tests", []):
                    if isinstance(test, dict) and "accepted_values" in test:
                        found[(model["name"], column["name"])] = test["accepted_values"]["arguments"]["values"]
    assert {column for _, column in found} >= {"currency", "contribution_type", "status", "country"}
    for (_, column), values in found.items():
        source_column = column.removeprefix("main_")  # dim_taxpayer.main_country holds a country
        assert tuple(values) == contract.BASE.column(source_column).values, column


@pytest.mark.parametrize("overrides, message", [
    ('{"columns": {"currency": {"values": ["EUR", "USD"]}}}', "adding USD is a contract change"),
    ('{"columns": {"amount": {"decimals": 3}}}', "amount (amount) allows no override"),
    ('{"columns": {"taxpayer_id": {"pattern": "("}}}', "taxpayer_id.pattern '(' is not a regular expression"),
    ('{"columns": {"taxpayer_id": {"max_length": 0}}}', "max_length must be a whole number from 1 to 512"),
    ('{"columns": {"declaration_id": {"max_length": 513}}}', "max_length must be a whole number from 1 to 512"),
    ('{"columns": {"event_date": {"earliest": "0000-01-01"}}}', "event_date.earliest must be a date YYYY-MM-DD"),
    ('{"columns": {"event_date": {"latest": "2026-02-30"}}}', "event_date.latest must be a date YYYY-MM-DD"),
    ('{"columns": {"event_date": {"earliest": "2030-01-01", "latest": "2020-01-01"}}}',
     "event_date.earliest 2030-01-01 is after its latest 2020-01-01"),
    ('{"columns": {"iban": {}}}', "no column iban in the contract"),
    ('{"rules": {}}', 'only {"columns": {...}} may be overridden'),
    ("[1]", "must be a JSON object"),
    ("{nope", "is not JSON"),
])
def test_an_override_that_cannot_be_used_is_refused_naming_it(overrides, message):
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({"CONTRIBFLOW_CONTRACT_OVERRIDES": overrides})


def test_contribflow_contract_prints_the_overrides_in_force(monkeypatch, capsys):
    monkeypatch.setenv("CONTRIBFLOW_CONTRACT_OVERRIDES",
                       json.dumps({"columns": {"taxpayer_id": {"pattern": "TAXP_[0-9]{5}", "max_length": 10},
                                               "country": {"values": ["LU"]}}}))
    assert cli.main(["contract", "--format", "json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    columns = {c["name"]: c for c in printed["columns"]}
    assert columns["taxpayer_id"]["pattern"] == "TAXP_[0-9]{5}" and columns["taxpayer_id"]["max_length"] == 10
    assert columns["country"]["values"] == ["LU"]
    assert columns["declaration_id"]["max_length"] == 64



def _ingest(day: dt.date = DAY) -> int:
    return cli.main(["ingest", "--date", day.isoformat(), "--file",
                     str(Path(Settings.from_env().landing_dir) / contract.file_name(day))])


@pytest.mark.integration
def test_a_full_day_in_the_source_format_loads_whole_and_reaches_the_marts(database, sql):
    results = runner.run_graph(Settings.from_env(), {"run-date": DAY.isoformat(), "rows": "3000",
                                                     "defect-rate": "0"})
    assert {r.stage: r.state for r in results} == {s: "ok" for s in (
        "init-db", "generate", "pick", "ingest", "dbt-build", "dbt-test", "publish", "finish")}
    assert sql("select rows_in, rows_loaded, rows_rejected from meta.etl_run where step = 'ingest'") == [
        (3000, 3000, 0)]
    assert sql("select count(*) from raw.contributions_quarantine") == [(0,)]
    assert sql("select count(*) from marts.fct_contributions") == [(3000,)]
    # the source's spelling reached raw as cents, and the hashes are the SQL definition's
    assert sql("select count(*) filter (where amount::text ~ '\\.\\d0$'), count(*) from raw.contributions")[0][0] > 100
    assert sql("""select count(*) from raw.contributions where record_hash <> raw.record_hash(declaration_id,
        taxpayer_id, event_date, amount, currency, contribution_type, status, country)""") == [(0,)]


@pytest.mark.integration
def test_an_overridden_pattern_quarantines_what_it_refuses(database, sql, monkeypatch):
    monkeypatch.setenv("CONTRIBFLOW_CONTRACT_OVERRIDES",
                       json.dumps({"columns": {"taxpayer_id": {"pattern": "TAXP_[0-9]{5}"}}}))
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "1")
    write_source(Path(database["CONTRIBFLOW_LANDING_DIR"]), DAY,
                 [_row(1), _row(2, taxpayer="63976"), _row(3, taxpayer="TAXP_639761")])
    assert cli.main(["init-db"]) == 0
    assert _ingest() == 0
    assert sql("select count(*) from raw.contributions") == [(1,)]
    assert sql("select source_line, rule, column_name from meta.data_quality_issue order by 1") == [
        (3, "taxpayer_id_pattern", "taxpayer_id"), (4, "taxpayer_id_pattern", "taxpayer_id")]


@pytest.mark.integration
def test_schema_drift_keep_loads_every_row_with_its_extra_values(database, sql, monkeypatch, capsys):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    write_source(landing, DAY, [_row(1) + ",first,", _row(2) + ',"a, b",x', _row(3, amount="-1") + ",bad,y"],
                 header=HEADER + ",comment,channel")
    assert cli.main(["init-db"]) == 0
    monkeypatch.setenv("CONTRIBFLOW_REJECT_THRESHOLD", "1")
    assert _ingest() == 1  # refused by default
    assert "unexpected column(s) 'comment', 'channel'" in capsys.readouterr().err
    assert sql("select outcome from meta.source_file") == [("REFUSED",)]

    monkeypatch.setenv("CONTRIBFLOW_SCHEMA_DRIFT", "keep")
    assert _ingest() == 0
    assert "schema drift: kept column(s) comment,channel" in capsys.readouterr().out
    assert sql("select source_line, extra from raw.contributions order by 1") == [
        (2, {"comment": "first", "channel": ""}), (3, {"comment": "a, b", "channel": "x"})]
    assert sql("select count(*) from raw.contributions_quarantine") == [(1,)]
    assert sql("select rule, column_name, severity, source_line from meta.data_quality_issue "
               "where rule = 'schema_drift'") == [("schema_drift", "comment, channel", "warning", 1)]

    write_source(landing, DAY, [_row(1)], header=HEADER.replace("amount", "amount_eur"))
    assert _ingest() == 1  # a renamed column is refused whatever the policy
    assert "missing column(s) amount" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.parametrize("action", ["warn", "fail"])
def test_a_day_far_below_the_trailing_median_is_reported(database, sql, monkeypatch, capsys, action):
    landing = Path(database["CONTRIBFLOW_LANDING_DIR"])
    assert cli.main(["init-db"]) == 0
    for offset, rows in enumerate((100, 120, 80, 100)):
        day = DAY + dt.timedelta(days=offset)
        write_source(landing, day, [_row(offset * 1000 + n) for n in range(rows)])
        assert _ingest(day) == 0
    assert sql("select details->>'volume' from meta.etl_run where step = 'ingest' order by id") == [
        ("no_history",), ("no_history",), ("no_history",), ("ok",)]
    monkeypatch.setenv("CONTRIBFLOW_VOLUME_ACTION", action)
    quiet = DAY + dt.timedelta(days=4)
    write_source(landing, quiet, [_row(9000 + n) for n in range(10)])
    capsys.readouterr()
    code = _ingest(quiet)
    detail = "10 rows; trailing median 100 over 4 loaded days (expected 50 to 200)"
    assert sql("select rule, severity, failing_value from meta.data_quality_issue") == [
        ("volume", "warning" if action == "warn" else "error", detail)]
    step = sql("select status, details->>'volume', rows_loaded from meta.etl_run where step = 'ingest' "
               "order by id desc limit 1")[0]
    if action == "warn":
        assert code == 0 and step == ("SUCCESS", "low", 10)
        assert f"warning: volume low: {detail}" in capsys.readouterr().out
    else:
        assert code == 1 and step == ("FAILED", "low", 0)
        assert "volume low" in capsys.readouterr().err
        assert sql("select outcome from meta.source_file where file_date = %s", (quiet,)) == [("REJECTED",)]
        assert sql("select count(*) from raw.contributions where file_date = %s", (quiet,)) == [(0,)]
