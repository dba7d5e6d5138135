"""Sequences of days: a stand-in source system, and what the marts must hold, computed from the
files alone.

The expectation never asks ContribFlow anything: it is worked out here from what the source sent
and which of those files the test says were loaded (and withdrawn), by the rule the marts promise —
for each declaration, the state of the latest file that mentioned it (the greatest file date, then
the later arrival, then the later line) — with the taxpayer key computed by ``hmac`` and the
dimension aggregated in Python. A test then compares it with every row of both published marts.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import hmac
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

HEADER = "declaration_id,taxpayer_id,event_date,amount,currency,contribution_type,status,country"
CENT = Decimal("0.01")


@dataclass(frozen=True)
class Row:
    """One valid row, as the source system's export (pandas' to_csv) writes it."""

    declaration_id: str
    taxpayer_id: str = "TAXP_10001"
    event_date: str = "2026-11-01"
    amount: str = "100.0"
    currency: str = "EUR"
    contribution_type: str = "INCOME_TAX"
    status: str = "DUE"
    country: str = "LU"

    def line(self) -> str:
        return ",".join(dataclasses.astuple(self))

    def but(self, **changes: str) -> Row:
        return dataclasses.replace(self, **changes)


@dataclass
class Sent:
    """A file the source wrote: its day, name and lines (a ``Row``, or a bad line as plain text)."""

    day: dt.date
    name: str
    lines: list[Row | str]

    @property
    def text(self) -> str:
        return "\n".join([HEADER, *(r.line() if isinstance(r, Row) else r for r in self.lines)]) + "\n"


def file_name(day: dt.date) -> str:
    return f"contributions_{day:%Y%m%d}.csv"


@dataclass
class Source:
    """Writes each day's file into the landing folder and remembers what it wrote."""

    landing: Path
    sent: list[Sent] = field(default_factory=list)

    def send(self, day: dt.date, lines: list[Row | str], *, name: str | None = None) -> Sent:
        """Write (or, for a name already written, rewrite in place) a day's file."""
        sent = Sent(day, name or file_name(day), list(lines))
        self.landing.mkdir(parents=True, exist_ok=True)
        (self.landing / sent.name).write_text(sent.text, encoding="utf-8")
        self.sent.append(sent)
        return sent

    def resend_bytes(self, earlier: Sent, day: dt.date) -> Sent:
        """An earlier export, byte for byte, under ``day``'s name (a source that re-sent yesterday)."""
        sent = Sent(day, file_name(day), list(earlier.lines))
        (self.landing / sent.name).write_bytes((self.landing / earlier.name).read_bytes()
                                               if (self.landing / earlier.name).exists()
                                               else earlier.text.encode())
        self.sent.append(sent)
        return sent


@dataclass
class Expectation:
    """The files that reached raw, in the order they were loaded, and those withdrawn since."""

    key: bytes
    loaded: list[Sent] = field(default_factory=list)
    withdrawn: set[int] = field(default_factory=set)
    """Positions in ``loaded`` of the files withdrawn from the marts."""

    def load(self, sent: Sent) -> None:
        self.loaded.append(sent)

    def withdraw(self, sent: Sent) -> None:
        self.withdrawn.add(max(i for i, s in enumerate(self.loaded) if s is sent))

    def taxpayer_key(self, taxpayer_id: str) -> str:
        return hmac.new(self.key, taxpayer_id.encode(), hashlib.sha256).hexdigest()

    def fct(self) -> dict[str, tuple]:
        """declaration_id -> the row marts.fct_contributions must hold (its columns but raw_loaded_at)."""
        latest: dict[str, tuple[tuple, Sent, int, Row]] = {}
        for arrival, sent in enumerate(self.loaded):
            if arrival in self.withdrawn:
                continue
            for number, row in enumerate(sent.lines, start=2):
                if not isinstance(row, Row):
                    continue  # a bad line: quarantined, never a state
                order = (sent.day, arrival, number)
                if row.declaration_id not in latest or order > latest[row.declaration_id][0]:
                    latest[row.declaration_id] = (order, sent, number, row)
        return {
            decl: (decl, self.taxpayer_key(row.taxpayer_id), dt.date.fromisoformat(row.event_date),
                   Decimal(row.amount).quantize(CENT), row.currency, row.contribution_type, row.status,
                   row.country, sent.day, sent.name, number)
            for decl, (_, sent, number, row) in latest.items()
        }

    def dim(self) -> dict[str, tuple]:
        """taxpayer_key -> the row marts.dim_taxpayer must hold."""
        per_taxpayer: dict[str, list[tuple]] = defaultdict(list)
        for row in self.fct().values():
            per_taxpayer[row[1]].append(row)
        out = {}
        for key, rows in per_taxpayer.items():
            countries = Counter(r[7] for r in rows)
            top = max(countries.values())
            out[key] = (
                key, min(c for c, n in countries.items() if n == top),
                min(r[2] for r in rows), max(r[2] for r in rows), len(rows),
                sum((r[3] for r in rows if r[6] == "PAID" and r[5] != "REFUND"), Decimal("0.00")),
                sum((r[3] for r in rows if r[6] == "DUE"), Decimal("0.00")),
            )
        return out


FCT_SQL = """select declaration_id, taxpayer_key, event_date, amount, currency, contribution_type, status,
                    country, file_date, source_file, source_line
               from marts.fct_contributions"""
DIM_SQL = """select taxpayer_key, main_country, first_event_date, last_event_date, declarations, amount_paid,
                    amount_due
               from marts.dim_taxpayer"""


def published(sql) -> tuple[dict[str, tuple], dict[str, tuple]]:
    fct = {r[0]: tuple(r) for r in sql(FCT_SQL)}
    dim = {r[0]: tuple(r) for r in sql(DIM_SQL)}
    return fct, dim


def differences(expected: dict[str, tuple], actual: dict[str, tuple], limit: int = 5) -> list[str]:
    """What differs between two keyed row sets, in a few readable lines (empty when equal)."""
    out = [f"missing {k}: expected {expected[k]}" for k in sorted(expected.keys() - actual.keys())]
    out += [f"unexpected {k}: {actual[k]}" for k in sorted(actual.keys() - expected.keys())]
    out += [f"{k}: expected {expected[k]}, got {actual[k]}" for k in sorted(expected.keys() & actual.keys())
            if expected[k] != actual[k]]
    return out[:limit] + ([f"… and {len(out) - limit} more"] if len(out) > limit else [])


def assert_published(sql, expectation: Expectation, when: str) -> None:
    fct, dim = published(sql)
    problems = differences(expectation.fct(), fct) + differences(expectation.dim(), dim)
    assert not problems, f"marts after {when} differ from what the files say:\n  " + "\n  ".join(problems)
