"""Unit tests: no database needed."""

from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pandas as pd
import pytest

from contribflow import generate, graph
from contribflow.contract import COLUMNS
from contribflow.errors import FileRefused
from contribflow.ingest.pseudonym import Pseudonymiser
from contribflow.ingest.reader import records
from contribflow.ingest.seenkeys import SeenKeys
from contribflow.ingest.source import fingerprint
from contribflow.ingest.validate import validate_chunk
from contribflow.settings import DEV_PSEUDONYM_KEY, Settings, SettingsError

from conftest import ROOT
from helpers import good_row, write_source

DAY = dt.date(2026, 11, 25)


def test_generate_is_deterministic_and_seed_sensitive(tmp_path):
    a, b, c = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    generate.write_file(a, generate.rows_for(DAY, 500, seed=1, defect_rate=0.05))
    generate.write_file(b, generate.rows_for(DAY, 500, seed=1, defect_rate=0.05))
    generate.write_file(c, generate.rows_for(DAY, 500, seed=2, defect_rate=0.05))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    assert len(a.read_text().splitlines()) == 501


def test_generated_resends_repeat_earlier_declarations_with_paid_status():
    rows = list(generate.rows_for(DAY, 1000, seed=7))
    resent = rows[900:]
    assert all(r[0].startswith("DEC_") and not r[0].startswith(f"DEC_{DAY:%Y%m%d}_") for r in resent)
    originals = {r[0]: r for d in range(1, 8)
                 for r in generate.rows_for(DAY - dt.timedelta(days=d), 1000, seed=7)}
    for row in resent:
        original = originals[row[0]]
        assert row[:6] == original[:6] and row[7] == original[7]
        assert row[6] == ("PAID" if original[6] == "DUE" else original[6])


def test_defect_rate_injects_roughly_that_share_of_invalid_rows():
    clean = list(generate.rows_for(DAY, 5000, seed=3))
    dirty = list(generate.rows_for(DAY, 5000, seed=3, defect_rate=0.1))
    changed = sum(a != b for a, b in zip(clean, dirty))
    assert 350 < changed < 650


def test_stage_graph_order_and_errors():
    names = [s.name for s in graph.topological_order()]
    assert names == ["init-db", "generate", "pick", "ingest", "dbt-build", "dbt-test", "publish"]
    with pytest.raises(ValueError, match="cycle"):
        graph.topological_order([graph.Stage("a", "x", (), depends=("b",)), graph.Stage("b", "x", (), depends=("a",))])
    with pytest.raises(ValueError, match="unknown"):
        graph.topological_order([graph.Stage("a", "x", (), depends=("zz",))])


def test_render_args_fills_every_placeholder_kind():
    args = graph.render_args(
        ["--date", "{param:run-date}", "--file", "{output:pick.file}", "{workflow:status}"],
        lambda kind, name, out: f"<{kind}|{name}|{out}>",
    )
    assert args == ["--date", "<param|run-date|None>", "--file", "<output|pick|file>", "<workflow|status|None>"]


def test_settings_parse_and_reject_bad_values():
    s = Settings.from_env({"CONTRIBFLOW_REJECT_THRESHOLD": "0.2", "CONTRIBFLOW_CHUNK_ROWS": "5"})
    assert s.reject_threshold == 0.2 and s.chunk_rows == 5 and s.uses_dev_key
    with pytest.raises(SettingsError, match="CONTRIBFLOW_REJECT_THRESHOLD"):
        Settings.from_env({"CONTRIBFLOW_REJECT_THRESHOLD": "2"})
    with pytest.raises(SettingsError, match="not a whole number"):
        Settings.from_env({"CONTRIBFLOW_CHUNK_ROWS": "many"})


def test_dev_key_is_refused_in_production():
    with pytest.raises(SettingsError, match="production"):
        Settings.from_env({"CONTRIBFLOW_ENV": "production"}).require_pseudonym_key()
    long_enough = "k" * 32
    key = Settings.from_env({"CONTRIBFLOW_ENV": "production", "CONTRIBFLOW_PSEUDONYM_KEY": long_enough})
    assert key.require_pseudonym_key() == long_enough.encode()
    with pytest.raises(SettingsError, match="has 31 characters; CONTRIBFLOW_ENV=production needs at least 32"):
        Settings.from_env({"CONTRIBFLOW_ENV": "production", "CONTRIBFLOW_PSEUDONYM_KEY": "k" * 31})
    assert Settings.from_env({}).require_pseudonym_key() == DEV_PSEUDONYM_KEY.encode()


def test_pseudonymiser_is_a_keyed_hash_not_a_plain_one():
    p = Pseudonymiser(b"secret")
    assert p.key_of("12345") == p.key_of("12345")
    assert p.key_of("12345") != Pseudonymiser(b"other").key_of("12345")
    assert p.key_of("12345") != hashlib.sha256(b"12345").hexdigest()
    assert "secret" not in repr(p)


def test_pseudonymiser_memo_stays_bounded_and_complete():
    p = Pseudonymiser(b"secret", cache_limit=3)
    p.keys_for(["1", "2"])
    keys = p.keys_for(["2", "3", "4"])  # over the limit: the memo restarts with this batch only
    assert set(keys) == {"2", "3", "4"}
    assert keys["2"] == Pseudonymiser(b"secret").key_of("2")


def test_validate_chunk_reports_each_failed_rule_by_line():
    rows = [good_row(1), good_row(2, amount="1.234"), good_row(3, status="X"), good_row(4, taxpayer="")]
    frame = pd.DataFrame(rows, columns=list(COLUMNS), index=[2, 3, 4, 5])
    frame = frame.mask(frame.eq(""))
    issues = validate_chunk(frame, np.array([False, False, False, True]))
    assert set(issues) == {3, 4, 5}
    assert [i.rule for i in issues[3]] == ["amount_two_decimals_max_12_digits"]
    assert [(i.rule, i.column, i.value) for i in issues[4]] == [("accepted_values", "status", "X")]
    assert {i.rule for i in issues[5]} == {"not_null", "unique_in_file"}


@pytest.mark.parametrize("amount", ["1e309", "NaN", "inf", "1,5", "+1.00", " 1.00", "1234567890123.00"])
def test_amounts_that_are_not_plain_decimals_are_rejected(amount):
    frame = pd.DataFrame([good_row(1, amount=amount)], columns=list(COLUMNS), index=[2])
    assert 2 in validate_chunk(frame, np.array([False]))


def test_seen_keys_flags_repeats_within_and_across_chunks():
    seen = SeenKeys()
    first = seen.mark(pd.Series(["a", "b", "a", None]))
    second = seen.mark(pd.Series(["c", "b", None]))
    assert first.tolist() == [False, False, True, False]
    assert second.tolist() == [False, True, False]


def test_reader_keeps_line_numbers_and_raw_text_across_quoted_newlines(tmp_path):
    path = write_source(tmp_path, DAY, ['D1,1,2026-11-01,1.00,EUR,"INCOME\nTAX",DUE,LU', ",".join(good_row(2))])
    header, recs = records(path)
    recs = list(recs)
    assert header == list(COLUMNS)
    assert [r.line for r in recs] == [2, 4]
    assert recs[0].raw == 'D1,1,2026-11-01,1.00,EUR,"INCOME\nTAX",DUE,LU\n'


def test_reader_accepts_a_bom_and_refuses_a_wrong_header(tmp_path):
    bom = write_source(tmp_path, DAY, [], raw=("\ufeff" + ",".join(COLUMNS) + "\n").encode())
    assert records(bom)[0] == list(COLUMNS)
    renamed = write_source(tmp_path, DAY, [], header=",".join(COLUMNS).replace("amount", "amt"))
    with pytest.raises(FileRefused, match="missing column\\(s\\) amount; unexpected column\\(s\\) 'amt'"):
        records(renamed)


def test_fingerprint_names_the_line_of_invalid_utf8(tmp_path):
    path = write_source(tmp_path, DAY, [], raw=b"a\nb\nc\xff\n")
    facts = fingerprint(path)
    assert facts.problem and "line 3" in facts.problem
    assert facts.sha256 == hashlib.sha256(b"a\nb\nc\xff\n").hexdigest()


def test_a_failed_nodes_cause_keeps_the_databases_words_not_dbts_wrappers():
    from contribflow.warehouse import transform

    unit = ("Runtime Error in unit_test x (models/staging/stg_contributions.yml)\n"
            "  An error occurred during execution of unit test 'x'. There may be an error in the unit test "
            "definition: check the data types.\n   Runtime Error\n"
            "    Relation name 'x' is longer than 63 characters")
    assert transform.cause(unit) == "Relation name 'x' is longer than 63 characters"
    database = ("Database Error in model dim_taxpayer (models/marts/dim_taxpayer.sql)\n  numeric field overflow\n"
                "  DETAIL:  A field with precision 16, scale 2 must round to an absolute value less than 10^14.\n"
                "  compiled code at target/run/contribflow/models/marts/dim_taxpayer.sql")
    assert transform.cause(database) == ("numeric field overflow; DETAIL:  A field with precision 16, scale 2 must "
                                         "round to an absolute value less than 10^14.")
    assert transform.cause("Runtime Error") == "Runtime Error"  # nothing but a wrapper: kept


def test_the_marts_column_lists_are_the_ones_dbt_contracts_enforce():
    """publish and trace use contribflow/warehouse/marts.py; dbt's enforced contracts must list the
    same columns in the same order, wherever in dbt/models the model's yml is."""
    import yaml

    from contribflow.warehouse.marts import DIM_COLUMNS, FCT_COLUMNS

    models = {}
    for path in (ROOT / "dbt" / "models").rglob("*.yml"):
        for model in (yaml.safe_load(path.read_text()) or {}).get("models", []) or []:
            models[model["name"]] = model
    expected = {"fct_contributions_delta": FCT_COLUMNS, "fct_contributions": FCT_COLUMNS,
                "dim_taxpayer": DIM_COLUMNS}
    for name, columns in expected.items():
        model = models[name]
        if name != "fct_contributions":  # the build's audit view: documented, not a contract
            assert (model.get("config") or {}).get("contract", {}).get("enforced") is True, name
        assert tuple(c["name"] for c in model["columns"]) == columns, name
