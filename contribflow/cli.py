"""``contribflow <stage>``: the thin CLI every container runs. One subcommand per stage.

Stage modules are imported only when their subcommand runs, so each image carries only its own
stage's dependencies (the ingest image has no dbt, the dbt image no pandas).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import sys
import time
from pathlib import Path

import psycopg

from contribflow import __version__, lineage, logs
from contribflow.cluster import imagemap
from contribflow.contract import file_date, parse_date
from contribflow.db import TRANSIENT_SQLSTATES, libpq_env, transient
from contribflow.errors import (
    EXIT_FAILED,
    EXIT_LATE,
    EXIT_TRANSIENT,
    EXIT_USAGE,
    DatabaseUnavailable,
    FileChanged,
    FileNotYetArrived,
    StageError,
    UsageError,
)
from contribflow.settings import RUN_ID, Settings, SettingsError
from contribflow.step import add_listener

_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?", re.ASCII)
_WHOLE = re.compile(r"-?[0-9]+", re.ASCII)
_DECLARATION = re.compile(r"[^\x00-\x1f\x7f-\x9f]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_REGISTRY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?::[0-9]{1,5})?(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*", re.ASCII)
_PERSON = re.compile(r"[a-z_][a-z0-9_]{0,62}", re.ASCII)
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", re.ASCII)
MAX_ROWS = 100_000_000
"""generate's --rows bound (generate.MAX_ROWS, not imported: the CLI stays light)."""
MAX_SEED = 2**32 - 1
DATE_ARGUMENTS = {"date": "--date", "first": "--from", "last": "--to", "before": "--before",
                  "date_from": "--from", "date_to": "--to"}
"""Every date argument of every subcommand (argparse ``dest`` → the flag), each checked against
CONTRIBFLOW_FUTURE_TOLERANCE_DAYS once the settings are read."""


def _date(text: str) -> dt.date:
    try:
        return parse_date(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{exc}; accepted: YYYY-MM-DD, from 1900-01-01 to today "
                                         "(UTC) + CONTRIBFLOW_FUTURE_TOLERANCE_DAYS") from None


def _share(text: str) -> float:
    """A share from 0 to 1, written as a plain decimal (``0.01``; not ``nan``, ``1e-2`` or ``.5``)."""
    if not _DECIMAL.fullmatch(text) or not 0.0 <= float(text) <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a decimal from 0 to 1 (e.g. 0.01)")
    return float(text)


def _whole(low: int, high: int):
    def parse(text: str) -> int:
        if not _WHOLE.fullmatch(text) or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from {low} to {high}")
        return int(text)

    parse.__name__ = "whole number"
    return parse


def _new_file(text: str) -> Path:
    """A file to write: not an existing folder, FIFO or device, in a folder that can exist."""
    path = Path(text)
    if not text or text != text.strip():
        raise argparse.ArgumentTypeError(f"{text!r} is not a file path (empty, or spaces around it)")
    if path.exists() and not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} exists and is not a regular file (a folder, FIFO or device)")
    return path


def _regular_file(text: str) -> Path:
    """An input file argument: refused at once when it is missing, a folder or a FIFO (which would
    block the read), naming the argument, rather than failing later with a less clear error."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: {'not a regular file' if path.exists() else 'no such file'}")
    return path


def _stages_spec(text: str) -> dict:
    """run-stages' spec, as the local runner writes it: a JSON object naming a report file and a list
    of stages, each a name, its arguments and the environment it adds."""
    path = Path(text)
    if not path.is_file():  # not a folder, nor a FIFO that would block the read
        raise argparse.ArgumentTypeError(f"{text}: not a regular file")
    try:
        spec = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{text}: cannot be read: {exc.strerror}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{text}: not a JSON spec ({exc})") from None
    stages = spec.get("stages") if isinstance(spec, dict) else None
    if (not isinstance(stages, list) or not stages or not isinstance(spec.get("report"), str)
            or not all(isinstance(s, dict) and isinstance(s.get("name"), str) and isinstance(s.get("args"), list)
                       and isinstance(s.get("env"), dict) for s in stages)):
        raise argparse.ArgumentTypeError(f"{text}: not a spec of the local runner (a report file and a list "
                                         "of stages, each with a name, args and env)")
    return spec


def _declaration(text: str) -> str:
    if not _DECLARATION.fullmatch(text) or text != text.strip():
        raise argparse.ArgumentTypeError("a declaration id is 1 to 64 characters, no control character, "
                                         "no surrounding spaces")
    return text


def _source_file_name(text: str) -> str:
    """A source file's name as the ledger holds it (no folder): contributions_YYYYMMDD.csv."""
    try:
        file_date(Path(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if Path(text).name != text:
        raise argparse.ArgumentTypeError(f"{text!r} is a path: give the file's name, as meta.source_file has it")
    return text


def _reason(text: str) -> str:
    """Why an operator acts, recorded in meta: some words, no control character, at most 1000 characters."""
    if not text.strip() or len(text) > 1000 or _CONTROL.search(text):
        raise argparse.ArgumentTypeError("a reason is 1 to 1000 characters of text (not only spaces, no control "
                                         "character): say why, it is recorded with who and when")
    return text.strip()


def _matching(pattern: re.Pattern[str], what: str):
    def parse(text: str) -> str:
        if not pattern.fullmatch(text):
            raise argparse.ArgumentTypeError(f"{text[:80]!r} is not {what}")
        return text

    parse.__name__ = what
    return parse


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def cmd_init_db(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.warehouse import migrate

    step = migrate.run(settings, args.date)
    print(f"init-db: {step.details['migrations_applied']} migration(s) applied")
    return 0


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow import generate

    step = generate.run(settings, args.date, args.rows, args.seed, args.defect_rate, args.out)
    print(f"generate: {step.rows_in} rows -> {step.details['path']}")
    return 0


def cmd_pick(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.ingest import pick

    step = pick.run(settings, args.date, args.wait)
    print(f"pick: {step.details['file']}")
    return 0


def cmd_ingest(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.ingest import stage  # a known or refused file is answered before pandas is imported

    step = stage.run(settings, args.date, args.file)
    d = step.details
    already = d.get("already_ingested_by")
    earlier = (f"{step.rows_in} rows: {d['rows_already_loaded']} already in raw, "
               f"{d['rows_quarantined_earlier']} quarantined when first seen")
    if d.get("duplicate_of"):
        print(f"ingest: warning: {args.file.name} has the same content as {d['duplicate_of']}, loaded for "
              f"{d['duplicate_of_date']} by run {already}: a re-sent export, recorded as DUPLICATE; "
              f"nothing loaded ({earlier})")
    elif already:
        print(f"ingest: {args.file.name} was already ingested by run {already}; nothing to do ({earlier})")
    else:
        storable = f" ({d['rows_not_storable']} not storable)" if d.get("rows_not_storable") else ""
        print(f"ingest: {step.rows_in} rows in, {step.rows_loaded} loaded, "
              f"{step.rows_rejected} quarantined{storable}, {d['rows_already_loaded']} already in raw")
    if step.details.get("extra_columns"):
        print(f"ingest: warning: schema drift: kept column(s) {step.details['extra_columns']} "
              "in raw.contributions.extra")
    if step.details.get("volume") in ("low", "high", "empty"):
        print(f"ingest: warning: volume {step.details['volume']}: {step.details['volume_detail']}")
    return 0


def cmd_purge_quarantine(args: argparse.Namespace, settings: Settings) -> int:
    raise StageError("purge-quarantine destroys evidence and needs a second person's approval since issue 28: "
                     f"contribflow request purge-quarantine --before {args.before} --reason TEXT, then an approver "
                     "runs contribflow approve ID, then contribflow apply ID (docs/runbook.md)")


def cmd_withdraw_file(args: argparse.Namespace, settings: Settings) -> int:
    day = file_date(Path(args.file))
    raise StageError("withdraw-file changes published numbers and needs a second person's approval since issue 28: "
                     f"contribflow request withdraw-file --date {day}"
                     + (f" --run {args.run}" if args.run else "")
                     + " --reason TEXT, then an approver runs contribflow approve ID, then contribflow apply ID "
                       "(docs/runbook.md)")


def cmd_request(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.warehouse import corrections

    arguments: dict[str, object] = {}
    if args.kind == "purge-quarantine":
        arguments["before"] = args.before.isoformat()
    else:
        arguments["date"] = args.date.isoformat()
    if args.kind == "withdraw-file" and args.run:
        arguments["run"] = args.run
    if args.kind == "reprocess" and args.threshold is not None:
        arguments["threshold"] = args.threshold
    if args.kind == "reload-corrected":
        if file_date(Path(args.file)) != args.date:
            raise ValueError(f"--file {args.file} is not a file of --date {args.date}")
        arguments["file"] = args.file
    request_id = corrections.request(settings, args.kind, arguments, args.reason)
    print(request_id)
    print(f"request: {args.kind} requested (request {request_id}); it expires in {settings.request_ttl_hours} h "
          f"(CONTRIBFLOW_REQUEST_TTL_HOURS) unless another person approves it: contribflow approve {request_id}",
          file=sys.stderr)
    return 0


def cmd_requests(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.warehouse import corrections

    found = corrections.listing(settings, args.open)
    if args.json:
        import dataclasses

        print(json.dumps([dataclasses.asdict(r) for r in found], default=str, indent=2))
        return 0
    for r in found:
        print(r.describe())
    if not found:
        print("no " + ("open " if args.open else "") + "request")
    return 0


def cmd_decide(approved: bool):
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        from contribflow.warehouse import corrections

        print(corrections.decide(settings, args.id, approved, args.reason).describe())
        return 0

    return handler


def cmd_apply(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.warehouse import corrections

    applied = corrections.apply(settings, args.id)
    req = applied.request
    if not applied.done:
        print(f"apply: request {req.id} was applied already by {req.applied_by} at {req.applied_at}; nothing done")
        return 0
    print(f"apply: {req.describe()}: " + ", ".join(f"{k}={v}" for k, v in applied.details.items()))
    if req.kind not in corrections.REBUILDS or args.no_publish:
        return 0
    from contribflow.local import runner

    print(f"apply: rebuilding and publishing the marts for {req.day} (write-audit-publish)")
    results = runner.run_graph(settings, {"run-date": req.day.isoformat()}, dict(os.environ),
                               stages=runner.rebuild_stages())
    return 0 if all(r.state in ("ok", "skipped") for r in results) else 1


def cmd_contract(args: argparse.Namespace, settings: Settings) -> int:
    """The source contract in force: contract.toml with this deployment's overrides."""
    source = settings.contract
    if args.format == "json":
        print(json.dumps(source.as_dict(), indent=2))
    else:
        print(source.markdown(), end="")
        print(f"\nSchema drift (an extra column): {settings.schema_drift}. A missing or renamed "
              "column is always refused.")
    return 0


def _dbt(command: str):
    def handler(args: argparse.Namespace, settings: Settings) -> int:
        from contribflow.warehouse import transform

        step = transform.run(settings, args.date, command, getattr(args, "full_refresh", False))
        print(f"dbt-{command}: " + ", ".join(f"{k}={v}" for k, v in step.details.items()))
        return 0

    return handler


def cmd_publish(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.warehouse import publish

    step = publish.run(settings, args.date)
    print("publish: " + ", ".join(f"{k}={v}" for k, v in step.details.items()))
    return 0


def cmd_publications(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.warehouse import publication

    print(publication.listing(settings, args.json))
    return 0


def cmd_reproduce(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.warehouse import reproduce

    if (args.publication is None) == (not args.check_published):
        raise UsageError("reproduce takes exactly one of --publication N (rebuild publication N from raw and "
                         "compare) and --check-published (compare the live marts with the latest record)")
    if args.check_published:
        code, lines = reproduce.check_published(settings)
    else:
        code, lines = reproduce.reproduce(settings, args.publication)
    print("\n".join(lines))
    return code


def cmd_finish(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow import finish

    finish.run(settings, args.date, args.status)
    print(f"finish: run {settings.run_id} for {args.date} succeeded")
    return 0


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.local import embedded, runner

    env = dict(os.environ)
    if not embedded.configured(env):
        db = embedded.start(settings.state_dir / "pgdata")
        env.update(db)
        os.environ.update(db)
        print(f"embedded PostgreSQL at {db['PGHOST']} (connect: {embedded.psql_hint(db)})")
    params = {"run-date": args.date.isoformat(), "rows": str(args.rows),
              "defect-rate": str(args.defect_rate), "generate": "false" if args.no_generate else "true"}
    results = runner.run_graph(settings, params, env)
    print()
    print(runner.summary(settings, args.date))
    return 0 if all(r.state in ("ok", "skipped") for r in results) else 1


def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.local import embedded

    data_dir = settings.state_dir / "pgdata"
    if (args.name is None) != (args.action != "add-person") or (args.role is None) != (args.action != "add-person"):
        raise ValueError("db add-person takes a NAME and --role operator|approver|auditor; the other actions "
                         "take neither")
    if args.action == "add-person":
        from contribflow.warehouse import corrections

        if not embedded.configured() and settings.environment != "production":
            os.environ.update(embedded.start(data_dir))
        created = corrections.add_person(settings, args.name, args.role)
        print(f"db add-person: {args.name} " + ("created (LOGIN, no password yet)" if created else "exists")
              + f", member of contribflow_{args.role}. An administrator sets the password in psql: "
              f"\\password {args.name}  (never on a command line; on a cluster, from the Secret the chart names)")
        return 0
    if args.action == "psql":
        import shutil

        env = dict(os.environ)
        if not embedded.configured(env):
            env.update(embedded.start(data_dir))
        env.update(libpq_env(settings.dsn))  # psql reads PG* variables, not CONTRIBFLOW_DSN
        psql = shutil.which("psql") or str(embedded.bin_dir() / "psql")
        sys.stdout.flush()
        os.execvpe(psql, [psql], env)
    if args.action == "stop":
        print("stopped" if embedded.stop(data_dir) else f"no embedded server running in {data_dir}")
        return 0
    db = embedded.start(data_dir)
    if args.action == "env":
        print("\n".join(f"export {k}={v}" for k, v in db.items()))
    else:
        print(f"embedded PostgreSQL at {db['PGHOST']}\nconnect: {embedded.psql_hint(db)}")
    return 0


def cmd_dates(args: argparse.Namespace, settings: Settings) -> int:
    import json

    from contribflow import dates

    print(json.dumps(dates.run(settings, args.first, args.last)))
    return 0


def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.audit import report as audit_report

    if args.html is not None or args.first is not None or args.last is not None:
        if args.date is not None or args.html is None or args.first is None or args.last is None:
            raise ValueError("the evidence pack takes --from, --to and --html together (and no --date)")
        from contribflow.audit import evidence_pack

        print(evidence_pack.run(settings, args.first, args.last, args.html))
        return 0
    if args.date is None:
        raise ValueError("audit needs --date, or --from/--to/--html for an evidence pack")
    print(audit_report.run(settings, args.date, args.json))
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.audit import chain
    from contribflow.db import connect
    from contribflow.step import write_outputs

    # Argo's gauge contribflow_audit_trail_intact reads this: 0 until verify proved the trail intact
    # (a verify that cannot reach the warehouse proves nothing).
    write_outputs(settings, {"audit_trail_intact": "0"})
    with connect(settings) as conn:
        result = chain.verify(conn)
    write_outputs(settings, {"audit_trail_intact": str(int(result.intact)), "audit_chain_entries": str(result.entries),
                             "audit_chain_seq": str(result.head_seq), "audit_chain_head": result.head_link})
    if result.intact:
        print(result.summary())
        return 0
    _stderr(f"contribflow verify: {result.summary()}")
    return EXIT_FAILED


def cmd_verify_pack(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.audit import signing

    print(signing.verify_file(args.file, args.public_key, settings))
    return 0


def _taxpayer_key(text: str) -> str:
    from contribflow.audit.trace import TAXPAYER_KEY

    if not TAXPAYER_KEY.match(text):
        raise argparse.ArgumentTypeError(
            "a taxpayer key is the 64 lowercase hex characters marts hold (HMAC-SHA256); "
            "a raw taxpayer id is never accepted")
    return text


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.audit import trace

    print(trace.run(settings, args.declaration, args.taxpayer_key, args.json))
    return 0


def cmd_images(args: argparse.Namespace, settings: Settings) -> int:
    from contribflow.cluster import imagemap

    if args.format == "json":
        print(imagemap.as_json(args.registry, args.tag))
    else:
        for name, image in imagemap.IMAGES.items():
            print(name, image.dockerfile, image.reference(args.registry, args.tag))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="contribflow",
        description="Daily tax-contribution files into an audited PostgreSQL warehouse.",
    )
    parser.add_argument("--version", action="version", version=f"contribflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def stage(name: str, handler, help_text: str, date_required: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        if date_required:
            p.add_argument("--date", type=_date, required=True, help="the run's logical date, YYYY-MM-DD")
        else:
            p.add_argument("--date", type=_date, default=None, help="the run's logical date, YYYY-MM-DD")
        p.set_defaults(handler=handler)
        return p

    stage("init-db", cmd_init_db, "apply the raw/meta migrations (idempotent)", date_required=False)
    p = stage("generate", cmd_generate, "write the synthetic source file for a date")
    p.add_argument("--rows", type=_whole(1, MAX_ROWS), default=10_000,
                   help=f"data rows, 1 to {MAX_ROWS} (default 10000)")
    p.add_argument("--seed", type=_whole(0, MAX_SEED), default=42,
                   help=f"0 to {MAX_SEED}; same date and seed, same bytes (default 42)")
    p.add_argument("--defect-rate", type=_share, default=0.0, help="share of rows given a defect, 0 to 1")
    p.add_argument("--out", type=_new_file, default=None, help="write here instead of the landing folder")
    p = stage("pick", cmd_pick, "find the source file for the run date in the landing folder; exit 76 while "
                                "it has not arrived and CONTRIBFLOW_LATE_DEADLINE_S has not passed")
    p.add_argument("--wait", action="store_true",
                   help="poll (every CONTRIBFLOW_LATE_POLL_S) until the file arrives or the deadline passes")
    p = stage("ingest", cmd_ingest, "validate a source file and load it into raw")
    p.add_argument("--file", type=Path, required=True,
                   help="the source file: a regular file directly in the landing folder, named "
                        "contributions_YYYYMMDD.csv for --date (no link, folder or FIFO)")
    p = stage("dbt-build", _dbt("build"), "build the dbt staging views and the day's marts into marts_build "
                                          "(analysts cannot read it; publish moves them to marts)")
    p.add_argument("--full-refresh", action="store_true", help="rebuild the fact delta from all of history")
    stage("dbt-test", _dbt("test"), "run every dbt test against the build, and check source freshness")
    stage("publish", cmd_publish, "publish the tested build to marts, all marts in one transaction")
    p = stage("finish", cmd_finish, "exit handler: record the run's outcome")
    p.add_argument("--status", required=True, choices=("Succeeded", "Failed", "Error"),
                   help="the workflow's status, as Argo's {{workflow.status}} says it")

    p = sub.add_parser("run", help="run the whole stage graph locally for a date",
                       description="Run every stage for a date, in dependency order, through this CLI. "
                                   "Without PG* variables, an embedded PostgreSQL is started.")
    p.add_argument("--date", type=_date, default=_today(), help="logical date (default: today, UTC)")
    p.add_argument("--rows", type=_whole(1, MAX_ROWS), default=10_000,
                   help=f"rows to generate, 1 to {MAX_ROWS} (default 10000)")
    p.add_argument("--defect-rate", type=_share, default=0.01, help="share of defective rows, 0 to 1 (default 0.01)")
    p.add_argument("--no-generate", action="store_true", help="use the file already in the landing folder")
    p.set_defaults(handler=cmd_run)

    p = sub.add_parser("run-stages", help="several stages in one process, as `contribflow run` starts them "
                       "(a JSON spec the local runner writes)")
    p.add_argument("spec", type=_stages_spec)
    p.set_defaults(handler=cmd_run_stages)

    p = sub.add_parser("dates", help="the dates of a backfill range, as a JSON list (Argo withParam)")
    p.add_argument("--from", dest="first", type=_date, required=True, help="first date, YYYY-MM-DD")
    p.add_argument("--to", dest="last", type=_date, required=True, help="last date (included), YYYY-MM-DD")
    p.set_defaults(handler=cmd_dates)

    p = sub.add_parser("audit", help="what meta records for a run date: runs, steps, files, issues, dbt",
                       description="The audit trail of a run date: every run and step with status and "
                                   "counts, the files (sha256, ledger outcome), quality issues by rule, "
                                   "dbt results, and steps RUNNING longer than CONTRIBFLOW_STALE_AFTER_S.")
    p.add_argument("--date", type=_date, default=None, help="the run date, YYYY-MM-DD")
    p.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    p.add_argument("--from", dest="first", type=_date, default=None,
                   help="evidence pack: first run date of the period, YYYY-MM-DD")
    p.add_argument("--to", dest="last", type=_date, default=None,
                   help="evidence pack: last run date (included), YYYY-MM-DD")
    p.add_argument("--html", type=_new_file, default=None,
                   help="evidence pack: write one self-contained HTML file here (no network, inline CSS/SVG)")
    p.set_defaults(handler=cmd_audit)

    p = sub.add_parser("verify", help="walk the hash chain of the audit trail: exit 0 intact, 1 naming the "
                       "first row whose content or link does not match",
                       description="Recompute every link of meta.audit_chain and the hash of every sealed row "
                                   "of the chained meta relations (docs/verify.md): prints 'intact' with the "
                                   "counts and exits 0, or names the first row (relation, key, seq) that was "
                                   "changed, deleted or inserted around the chain and exits 1. Needs the "
                                   "auditor role.")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("verify-pack", help="check an evidence pack against its detached signature FILE.sig",
                       description="Exit 0 when FILE.sig (a DSSE envelope, docs/verify.md) is a valid Ed25519 "
                                   "signature of FILE's exact bytes, 1 otherwise. Without --public-key the "
                                   "key is the one the signature names and this installation holds "
                                   "(CONTRIBFLOW_SIGNING_KEY_FILE, or the local dev key).")
    p.add_argument("file", type=_regular_file, help="the evidence pack (HTML)")
    p.add_argument("--public-key", type=_regular_file, default=None,
                   help="the signer's Ed25519 public key, PEM (SubjectPublicKeyInfo)")
    p.set_defaults(handler=cmd_verify_pack)

    p = sub.add_parser("purge-quarantine", help="end the quarantine's retention: remove quarantined rows "
                       "(raw taxpayer ids) of files dated before a day",
                       description="Remove the quarantined rows of files dated before --before and mask the "
                                   "failing identifier values recorded for them (docs/runbook.md, retention). "
                                   "raw.contributions, the legal record, is never touched. Since issue 28 "
                                   "a request: contribflow request purge-quarantine (this command refuses).")
    p.add_argument("--before", type=_date, required=True, help="first file date kept, YYYY-MM-DD")
    p.set_defaults(handler=cmd_purge_quarantine)

    p = sub.add_parser("withdraw-file", help="take a loaded file out of the marts from the next build on "
                       "(raw untouched)",
                       description="Record the withdrawal of a LOADED source file in meta.file_withdrawal (who, "
                                   "when, why): from the next build on its rows are no declaration's state; each "
                                   "declaration falls back to the latest remaining file that mentioned it, or "
                                   "leaves the marts. raw.contributions is never touched. Since issue 28 a "
                                   "request: contribflow request withdraw-file (this command refuses).")
    p.add_argument("--file", required=True, type=_source_file_name,
                   help="the file name, as meta.source_file has it (contributions_YYYYMMDD.csv)")
    p.add_argument("--run", default=None, type=_matching(RUN_ID, "a run id"),
                   help="the run that loaded it, when more than one run loaded that name")
    p.add_argument("--reason", required=True, type=_reason, help="why it is withdrawn (recorded; not empty)")
    p.set_defaults(handler=cmd_withdraw_file)

    p = sub.add_parser("request", help="ask for a correction that a second person approves (four eyes)",
                       description="Record a correction request in meta, as you (the login you connect as): "
                                   "an approver other than you approves it (contribflow approve ID) before it "
                                   "expires (CONTRIBFLOW_REQUEST_TTL_HOURS), then contribflow apply ID runs it. "
                                   "Prints the request's id.")
    kinds = p.add_subparsers(dest="kind", required=True, metavar="KIND")
    reason_help = "why (recorded with who and when; not empty)"
    k = kinds.add_parser("withdraw-file", help="take the file LOADED for a date out of the marts (raw untouched)")
    k.add_argument("--date", type=_date, required=True, help="the file's date, YYYY-MM-DD")
    k.add_argument("--run", default=None, type=_matching(RUN_ID, "a run id"),
                   help="the run that loaded it, when more than one run loaded that name")
    k.add_argument("--reason", required=True, type=_reason, help=reason_help)
    k = kinds.add_parser("reprocess", help="load a REJECTED file of a date, with a threshold for that run only")
    k.add_argument("--date", type=_date, required=True, help="the file's date, YYYY-MM-DD")
    k.add_argument("--threshold", type=_share, default=None,
                   help="the reject threshold for that run, 0 to 1 (default: CONTRIBFLOW_REJECT_THRESHOLD)")
    k.add_argument("--reason", required=True, type=_reason, help=reason_help)
    k = kinds.add_parser("reload-corrected", help="load a correction file of quarantined rows, linked to them")
    k.add_argument("--date", type=_date, required=True, help="the date of the quarantined rows, YYYY-MM-DD")
    k.add_argument("--file", required=True, type=_source_file_name,
                   help="the correction file's name in the landing folder (contributions_YYYYMMDD.csv)")
    k.add_argument("--reason", required=True, type=_reason, help=reason_help)
    k = kinds.add_parser("purge-quarantine", help="end the quarantine's retention before a date")
    k.add_argument("--before", type=_date, required=True, help="first file date kept, YYYY-MM-DD")
    k.add_argument("--reason", required=True, type=_reason, help=reason_help)
    p.set_defaults(handler=cmd_request)

    p = sub.add_parser("requests", help="list correction requests (who asked, who decided, applied)")
    p.add_argument("--open", action="store_true", help="only those still to approve or apply")
    p.add_argument("--json", action="store_true", help="JSON for machines instead of lines")
    p.set_defaults(handler=cmd_requests)
    request_id = _whole(1, 2**63 - 1)
    p = sub.add_parser("approve", help="approve another person's request (you must be an approver)")
    p.add_argument("id", type=request_id, help="the request's id")
    p.add_argument("--reason", type=_reason, default=None, help="a note kept with the approval (optional)")
    p.set_defaults(handler=cmd_decide(True))
    p = sub.add_parser("reject", help="reject another person's request (you must be an approver)")
    p.add_argument("id", type=request_id, help="the request's id")
    p.add_argument("--reason", type=_reason, required=True, help="why it is rejected (recorded)")
    p.set_defaults(handler=cmd_decide(False))
    p = sub.add_parser("apply", help="run an approved request's action once, then rebuild and publish the marts",
                       description="Apply an approved, unexpired request in the transaction that records its "
                                   "application (a second apply does nothing); a withdrawal, re-processing or "
                                   "re-load then rebuilds and publishes the day through write-audit-publish. "
                                   "Run as the warehouse's owner (the migrator login).")
    p.add_argument("id", type=request_id, help="the request's id")
    p.add_argument("--no-publish", action="store_true",
                   help="apply only (the contribflow-apply-request workflow rebuilds in its own steps)")
    p.set_defaults(handler=cmd_apply)

    p = sub.add_parser("trace", help="trace a mart row back to its file lines, runs, checks and tests",
                       description="For each mart row of a declaration (or of a pseudonymous taxpayer "
                                   "key): the published row, the staging row, every raw state in "
                                   "arrival order with file, sha256, line, ingest run and the Argo "
                                   "workflow/task/pod that loaded it, the quality checks of each file, "
                                   "and the dbt tests of the build analysts see. Needs the auditor role.")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--declaration", type=_declaration, help="a declaration id, e.g. DEC_20261101_000001")
    who.add_argument("--taxpayer-key", type=_taxpayer_key,
                     help="a pseudonymous taxpayer key (64 hex, as in marts), never a raw taxpayer id")
    p.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    p.set_defaults(handler=cmd_trace)

    p = sub.add_parser("publications", help="every recorded publication: inputs, code, row counts and content hashes",
                       description="Every publication meta.publication records, oldest first: logical date, "
                                   "time, run, build, its input files, git revision, and each published "
                                   "table's row count and content hash (docs/auditors.md). Needs the "
                                   "auditor (or transformer) role.")
    p.add_argument("--json", action="store_true", help="JSON for machines instead of a table")
    p.set_defaults(handler=cmd_publications)

    p = sub.add_parser("reproduce", help="rebuild a publication from raw and compare it with its record; "
                       "or check the live marts against the latest one",
                       description="--publication N: rebuild the marts as publication N made them, from raw "
                                   "alone (rows up to its high-water mark, without the files withdrawn by "
                                   "then), in the scratch schema marts_reproduce (emptied afterwards), and "
                                   "compare each table's row count and content hash with N's record. "
                                   "--check-published: compare the live marts with the latest publication's "
                                   "record. Exit 0 only when every table is identical, 1 when one differs, "
                                   f"{EXIT_USAGE} for an unknown publication or a wrong combination of flags.")
    p.add_argument("--publication", type=_whole(1, 2**63 - 1), default=None,
                   help="the publication to rebuild (`contribflow publications` lists them)")
    p.add_argument("--check-published", action="store_true",
                   help="compare the live marts with the latest publication's record instead")
    p.set_defaults(handler=cmd_reproduce)

    p = sub.add_parser("contract", help="print the source contract in force (with this deployment's overrides)",
                       description="The source contract in force: contribflow/contract.toml with "
                                   "CONTRIBFLOW_CONTRACT_OVERRIDES applied, and the schema-drift policy.")
    p.add_argument("--format", choices=("markdown", "json"), default="markdown")
    p.set_defaults(handler=cmd_contract)

    p = sub.add_parser("images", help="the image map: name, Dockerfile, repository:tag")
    p.add_argument("--registry", type=_matching(_REGISTRY, "an image registry prefix (host[:port]/path, "
                                                          "lower case)"),
                   default=imagemap.DEFAULT_REGISTRY, help="image registry prefix")
    p.add_argument("--tag", type=_matching(_TAG, "an image tag (1 to 128 letters, digits, '_', '.', '-')"),
                   default=__version__, help="image tag (default: the package version)")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(handler=cmd_images)

    p = sub.add_parser("db", help="the embedded PostgreSQL used when no server is configured; add a person")
    p.add_argument("action", choices=("start", "stop", "env", "psql", "add-person"),
                   help="psql: a psql shell in the local warehouse ($PG* if set, else the embedded server); "
                        "add-person: a personal LOGIN role, member of the group role of --role (needs CREATEROLE)")
    p.add_argument("name", nargs="?", default=None, type=_matching(_PERSON, "a person's login (1 to 63 lower-case "
                                                                             "letters, digits, '_')"),
                   help="add-person: the person's login name")
    p.add_argument("--role", choices=("operator", "approver", "auditor"), default=None,
                   help="add-person: operator (requests), approver (approves or rejects), auditor (reads)")
    p.set_defaults(handler=cmd_db)

    from contribflow.cluster import client as cluster  # imports `kubernetes` only when a cluster command runs

    cluster.add_commands(sub, _date)
    return parser


EXIT_BROKEN_PIPE = 128 + 13
"""What a command killed by SIGPIPE exits with, as users of ``… | head`` expect."""


def _first_line(exc: BaseException) -> str:
    from contribflow import redact

    return redact.database_error(exc, one_line=True)  # without the values a data error quotes


def _reader_went_away() -> int:
    """The reader of stdout closed it (``contribflow audit | head``): stop quietly, and point stdout
    at /dev/null so that the interpreter's final flush does not raise again."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_BROKEN_PIPE


WAREHOUSE_COMMANDS = {"init-db", "generate", "pick", "ingest", "dbt-build", "dbt-test", "publish", "finish", "audit",
                      "purge-quarantine", "trace", "withdraw-file", "request", "requests", "approve",
                      "reject", "apply", "publications", "reproduce",
                      "verify"}
"""The subcommands that read or write the warehouse: without PG* variables they use the embedded
server, as ``contribflow run`` does (outside production)."""


def _embedded_when_unconfigured(command: str, settings: Settings) -> None:
    """Point libpq at the local embedded server when nothing selects a server: a local
    ``contribflow audit`` finds the warehouse ``contribflow run`` filled. Never in production."""
    from contribflow.local import embedded

    if command not in WAREHOUSE_COMMANDS or embedded.configured() or settings.environment == "production":
        return
    os.environ.update(embedded.start(settings.state_dir / "pgdata"))


def _check_dates(args: argparse.Namespace, settings: Settings) -> None:
    """Every date argument at most CONTRIBFLOW_FUTURE_TOLERANCE_DAYS after today (UTC): a run date
    in the future would load a file as a day that has not happened, and shadow later corrections."""
    latest = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=settings.future_tolerance_days)
    for dest, flag in DATE_ARGUMENTS.items():
        value = getattr(args, dest, None)
        if isinstance(value, dt.date) and value > latest:
            raise SettingsError(f"{flag} {value} is after {latest}: today (UTC) + CONTRIBFLOW_FUTURE_TOLERANCE_DAYS="
                                f"{settings.future_tolerance_days}; accepted: YYYY-MM-DD from 1900-01-01 to {latest}")


def _database_error(command: str, exc: psycopg.Error) -> int:
    """One line, and the exit code the SQLSTATE calls for (db.transient; docs/reliability.md)."""
    state = exc.sqlstate
    if transient(exc):
        if state is None or state.startswith("08") or state.startswith("57P"):
            _stderr(f"contribflow {command}: database error (connection lost?): {_first_line(exc)}")
        else:
            _stderr(f"contribflow {command}: database error (SQLSTATE {state}, "
                    f"{TRANSIENT_SQLSTATES[state].split(' ')[0]}: transient, retried): {_first_line(exc)}")
        return EXIT_TRANSIENT
    _stderr(f"contribflow {command}: database error" + (f" (SQLSTATE {state}, not retried)" if state else "")
            + f": {_first_line(exc)}")
    return EXIT_FAILED


def _stderr(line: str) -> None:
    """A refusal: one line on stderr, or one JSON record with CONTRIBFLOW_LOG_FORMAT=json."""
    if logs.active_format() == "json":
        logs.get("cli").error(line)
    else:
        print(line, file=sys.stderr)


def cmd_run_stages(args: argparse.Namespace, settings: Settings) -> int:
    """Several stages of the local runner in this one process (contribflow/local/runner.py,
    _process_group): each through main, with its own environment, exit code and timings, reported
    in the spec's report file; the first failure stops the chain."""
    spec = args.spec
    done: list[dict] = []
    for item in spec["stages"]:
        os.environ.update(item["env"])
        started, cpu = time.monotonic(), time.process_time()
        try:
            code = main([item["name"], *item["args"]])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        done.append({"stage": item["name"], "code": code, "wall_s": time.monotonic() - started,
                     "cpu_s": time.process_time() - cpu})
        Path(spec["report"]).write_text(json.dumps(done))
        if code != 0:
            return code
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    add_listener(lineage.LISTENER)  # OpenLineage events of every step, when a transport is configured
    try:
        logs.setup(args.command, os.environ.get("CONTRIBFLOW_RUN_ID", ""))
        settings = Settings.from_env()
        logs.setup(args.command, settings.run_id)
        _check_dates(args, settings)
        _embedded_when_unconfigured(args.command, settings)
        code = args.handler(args, settings)
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        return _reader_went_away()
    except FileNotYetArrived as exc:
        _stderr(f"contribflow {args.command}: {exc}")
        return EXIT_LATE
    except UsageError as exc:
        _stderr(f"contribflow {args.command}: error: {exc}")
        return EXIT_USAGE
    except (DatabaseUnavailable, FileChanged) as exc:
        _stderr(f"contribflow {args.command}: error: {exc}")
        return EXIT_TRANSIENT
    except psycopg.Error as exc:
        return _database_error(args.command, exc)
    except (StageError, SettingsError, ValueError, RuntimeError) as exc:
        _stderr(f"contribflow {args.command}: error: {exc}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        _stderr(f"contribflow {args.command}: interrupted")
        return 130
