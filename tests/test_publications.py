"""Every publication recorded, as-of history, exact reproduction (issue 27, parts 1-3).

Days run through the CLI as an operator would (tests/test_state_over_time.py's harness); what each
publication must show is worked out from the files alone (tests/days.py), never asked of
ContribFlow. Then: the as-of functions give, for every publication, exactly what it showed;
``contribflow reproduce --publication N`` rebuilds each from raw and finds it identical, before and
after a later withdrawal; ``--check-published`` finds a row changed behind the pipeline's back.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import psycopg
import pytest
from test_state_over_time import Source, cli, row, run_day

import days

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
D1, D2, D3, D4 = (dt.date(2026, 11, 2) + dt.timedelta(days=n) for n in range(4))
DECLARATION = "DEC_20261101_000001"
FCT_AS_OF = days.FCT_SQL.replace("from marts.fct_contributions", "from marts.fct_contributions_as_of(%s)")
DIM_AS_OF = days.DIM_SQL.replace("from marts.dim_taxpayer", "from marts.dim_taxpayer_as_of(%s)")
SCRATCH = "select count(*) from pg_class where relnamespace = 'marts_reproduce'::regnamespace"


def as_of(sql, publication: int) -> tuple[dict, dict]:
    return ({r[0]: tuple(r) for r in sql(FCT_AS_OF, (publication,))},
            {r[0]: tuple(r) for r in sql(DIM_AS_OF, (publication,))})


def assert_as_of(sql, publication: int, expected: tuple[dict, dict]) -> None:
    fct, dim = as_of(sql, publication)
    problems = days.differences(expected[0], fct) + days.differences(expected[1], dim)
    assert not problems, f"as of publication {publication}:\n  " + "\n  ".join(problems)


def reproduce(*args: str) -> tuple[int, str]:
    done = cli("reproduce", *args)
    return done.returncode, done.stdout + done.stderr


@pytest.fixture
def source(database) -> Source:
    return Source(Path(database["CONTRIBFLOW_LANDING_DIR"]))


def test_three_days_a_reversal_and_a_withdrawal_every_publication_as_of_and_reproduced(
        database, sql, source, monkeypatch, tmp_path, people):
    monkeypatch.setenv("CONTRIBFLOW_GIT_REVISION", "0123abcd")
    others = [row(n, "PAID", "5.0", taxpayer="TAXP_20002") for n in range(10, 13)]
    shown: dict[int, tuple[dict, dict]] = {}
    source.send(D1, [row(1, "DUE", "100.00"), *others])
    run_day(D1, "pub-1")
    shown[1] = (source.expect.fct(), source.expect.dim())
    high_water_1 = sql("select max(ingestion_ts) from raw.contributions")[0][0]
    source.send(D2, [row(1, "PAID", "120.00"), row(2, "DUE", "7.0")])
    run_day(D2, "pub-2")
    shown[2] = (source.expect.fct(), source.expect.dim())
    source.send(D3, [row(1, "DUE", "100.0")])
    run_day(D3, "pub-3")
    shown[3] = (source.expect.fct(), source.expect.dim())
    assert [s[0][DECLARATION][6] for s in shown.values()] == ["DUE", "PAID", "DUE"]

    # 1. Every publication recorded, in the publish transaction: ids, inputs, code, outputs.
    pubs = json.loads(cli("publications", "--json").stdout)
    assert [(p["id"], p["logical_date"], p["run_id"]) for p in pubs] == [
        (1, D1.isoformat(), "pub-1"), (2, D2.isoformat(), "pub-2"), (3, D3.isoformat(), "pub-3")]
    assert sql("select p.build_id from meta.publication p join meta.mart_build b on b.id = p.build_id "
               "where b.status = 'PUBLISHED' order by p.id") == sql(
        "select id from meta.mart_build where status = 'PUBLISHED' order by id")
    assert dt.datetime.fromisoformat(pubs[0]["raw_high_water"]) == high_water_1
    assert [p["input_files"] for p in pubs] == [1, 2, 3]
    assert sql("select file_name, sha256 from meta.publication_input where publication_id = 3 order by file_date") \
        == sql("select file_name, sha256 from meta.source_file where outcome = 'LOADED' order by file_date")
    assert {p["git_revision"] for p in pubs} == {"0123abcd"}
    assert all(p["dbt_checksum"] and len(p["dbt_checksum"]) == 64 and p["dbt_version"] for p in pubs)
    assert len({p["dbt_checksum"] for p in pubs}) == 1  # the same code every day
    assert [p["outputs"]["fct_contributions"]["rows"] for p in pubs] == [len(s[0]) for s in shown.values()]
    assert [p["outputs"]["fct_contributions"]["computed"] for p in pubs] == ["full", "incremental", "incremental"]
    assert pubs[0]["outputs"]["fct_contributions"]["content_hash"] != pubs[1]["outputs"]["fct_contributions"][
        "content_hash"]
    listing = cli("publications").stdout
    assert all(p["outputs"]["dim_taxpayer"]["content_hash"] in listing for p in pubs), listing

    # 2. As of each publication: exactly what it showed, for the declaration and for everything.
    for number, expected in shown.items():
        assert_as_of(sql, number, expected)
    assert sql("select status, amount::text, file_date from marts.fct_contributions_history "
               "where declaration_id = %s order by valid_from_publication", (DECLARATION,)) == [
        ("DUE", "100.00", D1), ("PAID", "120.00", D2), ("DUE", "100.00", D3)]
    # Unchanged rows keep their first version: 4 declarations of day 1, 2 new versions after.
    assert sql("select count(*) from marts.fct_contributions_history") == [(len(shown[1][0]) + 1 + 2,)]
    for number, published_at in sql("select id, published_at from meta.publication order by id"):
        assert sql("select * from marts.fct_contributions_as_of_time(%s) except all "
                   "select * from marts.fct_contributions_as_of(%s)", (published_at, number)) == []
        assert sql("select count(*) from marts.fct_contributions_as_of_time(%s)", (published_at,)) == [
            (len(shown[number][0]),)]
    assert sql("select count(*) from marts.fct_contributions_as_of_time(%s)",
               (sql("select published_at - interval '1 microsecond' from meta.publication where id = 1")[0][0],)) \
        == [(0,)]
    # One declaration's versions: an index lookup, through the inlined function.
    plan = "\n".join(r[0] for r in sql("explain select * from marts.fct_contributions_as_of(2) "
                                       "where declaration_id = %s", (DECLARATION,)))
    assert "fct_contributions_history_declaration" in plan or "fct_contributions_history_current" in plan, plan

    # 3. Each publication rebuilt from raw alone is identical to its record; the scratch schema is left empty.
    for number in shown:
        code, out = reproduce("--publication", str(number))
        assert code == 0, out
        assert f"fct_contributions: identical ({len(shown[number][0])} rows" in out, out
        assert "dim_taxpayer: identical" in out, out
    assert sql(SCRATCH) == [(0,)]
    code, out = reproduce("--check-published")
    assert code == 0 and "publication 3 (the latest)" in out and out.count("identical") == 2, out

    # A withdrawal between publications: day 2's file. Publication 4 honours it, 2 still shows it.
    name = source.files[1][2]
    request = people.approved(["withdraw-file", "--date", D2.isoformat(), "--reason", "sent by mistake (ticket 7)"])
    withdrawn = cli("apply", str(request), "--no-publish")  # day 4's run publishes it
    assert withdrawn.returncode == 0, withdrawn.stderr
    source.withdrawn.add(1)
    source.send(D4, [row(30, "DUE", "1.0")])
    run_day(D4, "pub-4")
    shown[4] = (source.expect.fct(), source.expect.dim())
    assert "DEC_20261101_000002" not in shown[4][0] and "DEC_20261101_000002" in shown[2][0]
    assert_as_of(sql, 4, shown[4])
    assert_as_of(sql, 2, shown[2])
    assert sql("select withdrawn from meta.publication_input where publication_id = 4 and file_name = %s",
               (name,)) == [(True,)]
    for number in (2, 4):
        code, out = reproduce("--publication", str(number))
        assert code == 0 and out.count("identical") == 2, out
        assert ("without 1 withdrawn file" in out) == (number == 4), out
    assert reproduce("--check-published")[0] == 0

    # A published row changed behind the pipeline's back (a superuser's UPDATE) is found.
    sql("update marts.fct_contributions set amount = amount + 1 where declaration_id = 'DEC_20261101_000010'")
    code, out = reproduce("--check-published")
    assert code == 1, out
    assert "fct_contributions: DIFFERS" in out and "DEC_20261101_000010" in out, out
    assert "dim_taxpayer: identical" in out, out
    assert reproduce("--publication", "4")[0] == 0  # the rebuild from raw does not read the marts
    # The runbook's remedy: a full refresh re-publishes every row from raw, and its record hashes them all.
    env = dict(os.environ, CONTRIBFLOW_RUN_ID="pub-5-full")
    for stage in (["dbt-build", "--full-refresh"], ["dbt-test"], ["publish"]):
        done = cli(stage[0], "--date", D4.isoformat(), *stage[1:], env=env)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert reproduce("--check-published")[0] == 0
    assert sql("select computed from meta.publication_output where publication_id = 5") == [("full",), ("full",)]
    assert_as_of(sql, 5, shown[4])
    # The tampered row was never a published version: the history has no new one for it.
    assert sql("select count(*) from marts.fct_contributions_history where declaration_id = 'DEC_20261101_000010'") \
        == [(1,)]

    # Bad arguments: a clear error, exit 2 (errors.EXIT_USAGE).
    for args, says in [(("--publication", "99"), "there is no publication 99: publications are numbered 1 to 5"),
                       (("--publication", "1", "--check-published"), "exactly one of"),
                       ((), "exactly one of")]:
        code, out = reproduce(*args)
        assert code == 2 and says in out, (args, out)

    # A rebuild that fails still leaves the scratch schema empty (and exits 1, naming the model).
    broken = tmp_path / "dbt"
    shutil.copytree(ROOT / "dbt", broken, ignore=shutil.ignore_patterns("target", "logs"))
    model = broken / "models" / "marts" / "dim_taxpayer.sql"
    model.write_text(model.read_text().replace("count(*) as declarations", "count(*) / 0 as declarations"))
    done = cli("reproduce", "--publication", "3", env=dict(os.environ, CONTRIBFLOW_DBT_PROJECT_DIR=str(broken)))
    assert done.returncode == 1 and "dim_taxpayer" in done.stderr, done.stdout + done.stderr
    assert sql(SCRATCH) == [(0,)]


def test_the_history_and_the_record_are_read_by_whom_they_should_be(database, sql, source):
    """The analyst reads the history and the as-of functions (pseudonymised: no taxpayer_id column),
    not meta.publication; the auditor reads the record; nobody but the owner changes it."""
    source.send(D1, [row(1), row(2, "PAID", taxpayer="TAXP_20002")])
    run_day(D1, "roles-1")
    with psycopg.connect(host=database["PGHOST"], user=database["PGUSER"], dbname=database["PGDATABASE"],
                         autocommit=True) as conn:
        conn.execute("SET ROLE contribflow_analyst")
        assert conn.execute("select count(*) from marts.fct_contributions_as_of(1)").fetchone() == (2,)
        assert conn.execute("select count(*) from marts.dim_taxpayer_as_of_time(now())").fetchone() == (2,)
        columns = {c.name for c in conn.execute("select * from marts.fct_contributions_history").description}
        assert "taxpayer_id" not in columns and "taxpayer_key" in columns
        for denied in ("select from meta.publication", "select meta.digest_hex(0)", "select from raw.contributions"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(denied)
        conn.execute("RESET ROLE")
        conn.execute("SET ROLE contribflow_auditor")
        assert conn.execute("select count(*) from meta.publication_output").fetchone() == (2,)
        for role in ("contribflow_auditor", "contribflow_transformer"):
            conn.execute("RESET ROLE")
            conn.execute(f"SET ROLE {role}")
            for change in ("update meta.publication set git_revision = 'x'", "delete from meta.publication_output",
                           "update marts.fct_contributions_history set status = 'x'" if role == "contribflow_auditor"
                           else "update meta.publication_input set withdrawn = true"):
                with pytest.raises(psycopg.errors.InsufficientPrivilege):
                    conn.execute(change)


def test_the_content_hash_is_what_docs_auditors_md_defines(database, sql):
    """The canonical text the docs show is the one the SQL hashes, and the sum wraps modulo 2^128."""
    assert cli("init-db").returncode == 0
    doc = (ROOT / "docs" / "auditors.md").read_text(encoding="utf-8")
    canonical = re.search(r"```text\n(5:DEC_1,[^\n]*)\n```", doc).group(1)
    [(ours, theirs, expected)] = sql(
        "select meta.fct_row_digest('DEC_1', 'k', '2026-11-01', 100.00, 'EUR', 'INCOME_TAX', 'DUE', 'LU', "
        "'2026-11-02', 'contributions_20261102.csv', 2, '2026-11-02 08:00:00+00'), meta.hex128(md5(%s)), "
        "meta.hex128(%s)", (canonical, hashlib.md5(canonical.encode()).hexdigest()))
    assert sql("select meta.digest_hex(meta.hex128(%s))", (ours,)) == [(ours,)]
    assert ours == hashlib.md5(canonical.encode()).hexdigest()
    assert theirs == expected and int(expected) % 2**128 == int(ours, 16)  # Decimal % keeps the sign
    top = "f" * 32
    assert sql("select meta.digest_hex(meta.hex128(%s)), meta.digest_hex(meta.hex128(%s) + 1), "
               "meta.digest_hex(-1), meta.digest_hex(0)", (top, top)) == [(top, "0" * 32, top, "0" * 32)]
    # NULL and the empty text differ; so do fields that would run together without their lengths.
    assert sql("select meta.dim_row_digest('a', null, null, null, 1, 0, 0) <> "
               "meta.dim_row_digest('a', '', null, null, 1, 0, 0)") == [(True,)]
    assert sql("select meta.dim_row_digest('a,1:b', null, null, null, 1, 0, 0) <> "
               "meta.dim_row_digest('a', ',1:b', null, null, 1, 0, 0)") == [(True,)]
