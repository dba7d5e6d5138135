"""Small helpers shared by the tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from contribflow.contract import COLUMNS, file_name


def write_source(landing: Path, day: dt.date, rows: list[list[str]] | list[str], header: str | None = None,
                 raw: bytes | None = None) -> Path:
    """A source file for ``day``: rows as field lists or as ready-made lines, or exact bytes."""
    landing.mkdir(parents=True, exist_ok=True)
    path = landing / file_name(day)
    if raw is not None:
        path.write_bytes(raw)
        return path
    lines = [header if header is not None else ",".join(COLUMNS)]
    lines += [r if isinstance(r, str) else ",".join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_row(n: int, status: str = "DUE", taxpayer: str = "12345", amount: str = "100.00") -> list[str]:
    return [f"D{n:08d}", taxpayer, "2026-11-01", amount, "EUR", "INCOME_TAX", status, "LU"]
