"""The volume check: is a day's row count far from what the source usually sends?

A source that sends a tenth of its usual rows has most likely failed upstream, and a file of twice
the usual size may hold another day's rows too; neither breaks a row rule, so validation cannot
see it. The day's rows (every record that arrived, good or bad) are compared with the median of the
last loaded days before it (one count per date: its latest load), which one unusual day cannot
move. A header-only file, a quiet day, is always reported.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass

import psycopg

from contribflow.settings import Settings

RULE = "volume"


@dataclass(frozen=True)
class VolumeCheck:
    rows: int
    median: float | None
    """The trailing median, None with fewer than ``volume_min_history`` loaded days before."""
    days: int
    verdict: str
    """ok, low, high, empty (no data rows), or no_history."""
    low: float | None = None
    high: float | None = None

    @property
    def outside(self) -> bool:
        return self.verdict in ("low", "high", "empty")

    def describe(self) -> str:
        if self.median is None:
            return f"{self.rows} rows; {self.days} loaded day(s) before it, too few to compare"
        return (f"{self.rows} rows; trailing median {self.median:g} over {self.days} loaded days "
                f"(expected {self.low:g} to {self.high:g})")


def check_volume(conn: psycopg.Connection, settings: Settings, day: dt.date, rows: int) -> VolumeCheck:
    counts = [r[0] for r in conn.execute(
        """SELECT rows_in FROM (SELECT DISTINCT ON (file_date) file_date, rows_in
                                  FROM meta.source_file
                                 WHERE outcome = 'LOADED' AND file_date < %s AND rows_in IS NOT NULL
                                 ORDER BY file_date DESC, seen_at DESC) AS per_day
            ORDER BY file_date DESC LIMIT %s""",
        (day, settings.volume_lookback_days),
    )]
    if len(counts) < settings.volume_min_history:
        return VolumeCheck(rows, None, len(counts), "empty" if rows == 0 else "no_history")
    median = float(statistics.median(counts))
    low, high = median * settings.volume_low_ratio, median * settings.volume_high_ratio
    verdict = "empty" if rows == 0 else "low" if rows < low else "high" if rows > high else "ok"
    return VolumeCheck(rows, median, len(counts), verdict, low, high)
