"""``contribflow dates``: the run dates of a backfill, which Argo fans out one daily run per date
(Argo's CronWorkflow has no catch-up, so missed days are backfilled explicitly)."""

from __future__ import annotations

import datetime as dt
import json

from contribflow.settings import Settings
from contribflow.step import write_outputs

MAX_DAYS = 366
"""A longer range is almost certainly a typo (a wrong year); split it into several backfills."""


def date_range(first: dt.date, last: dt.date, max_days: int = MAX_DAYS) -> list[dt.date]:
    if last < first:
        raise ValueError(f"backfill range is reversed: --from {first} is after --to {last}")
    days = (last - first).days + 1
    if days > max_days:
        raise ValueError(f"backfill range {first}..{last} has {days} days; at most {max_days} per backfill")
    return [first + dt.timedelta(days=n) for n in range(days)]


def run(settings: Settings, first: dt.date, last: dt.date) -> list[str]:
    """The dates as ISO strings, printed and written as the output parameter ``dates`` (a JSON list,
    what Argo's ``withParam`` expects)."""
    dates = [d.isoformat() for d in date_range(first, last)]
    write_outputs(settings, {"dates": json.dumps(dates), "days": str(len(dates))})
    return dates
