"""The source contract: file naming, columns and the domain of each value (DESIGN.md)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

COLUMNS: tuple[str, ...] = (
    "declaration_id", "taxpayer_id", "event_date", "amount",
    "currency", "contribution_type", "status", "country",
)
CURRENCIES = ("EUR",)
CONTRIBUTION_TYPES = ("INCOME_TAX", "PROPERTY_TAX", "PENALTY", "REFUND")
STATUSES = ("PAID", "DUE", "CANCELLED")
COUNTRIES = ("LU", "FR", "DE", "BE")

DECLARATION_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
TAXPAYER_ID = r"^[A-Za-z0-9]{1,32}$"
ISO_DATE = r"^\d{4}-\d{2}-\d{2}$"
NUMBER = r"^-?\d+(\.\d+)?$"
AMOUNT = r"^\d{1,12}(\.\d{1,2})?$"
"""≥ 0, at most 2 decimals, fits numeric(14,2)."""

FILE_NAME = re.compile(r"^contributions_(\d{8})\.csv$")


def file_name(day: dt.date) -> str:
    return f"contributions_{day:%Y%m%d}.csv"


def file_date(path: Path) -> dt.date:
    """The logical date a source file is for, from its name."""
    match = FILE_NAME.match(path.name)
    if not match:
        raise ValueError(f"{path.name!r} is not named contributions_YYYYMMDD.csv")
    try:
        return dt.datetime.strptime(match.group(1), "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"{path.name!r} does not carry a valid date") from None


def parse_date(text: str) -> dt.date:
    """A run date given on the command line."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"run date {text!r} is not an ISO date (YYYY-MM-DD)") from None
