"""Small helpers shared by the tests."""

from __future__ import annotations

import datetime as dt
import json
from http.server import BaseHTTPRequestHandler
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


def good_row(n: int, status: str = "DUE", taxpayer: str = "TAXP_12345", amount: str = "100.0") -> list[str]:
    """A valid row in the source system's own format (ids like DEC_20261101_000001, TAXP_12345;
    amounts as its pandas writes them, 100.0)."""
    return [f"DEC_20261101_{n:06d}", taxpayer, "2026-11-01", amount, "EUR", "INCOME_TAX", status, "LU"]


class JsonHandler(BaseHTTPRequestHandler):
    """Base of the tests' stand-in API servers: quiet, and answers with JSON."""

    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
