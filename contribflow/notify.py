"""Notifications: a webhook told when a run failed, its file was late or its SLA was missed.

``finish`` builds the run's ``RunSummary`` and hands it to the notifiers the settings configure
(``notifiers``); it knows no webhook format. One notifier exists: ``Webhook``, which posts JSON in
one of three shapes (``CONTRIBFLOW_NOTIFY_FORMAT``): ``generic`` (the summary's fields), ``slack``
(an incoming webhook's ``text`` and ``blocks``) or ``teams`` (an Adaptive Card message, as a Teams
Workflows webhook takes it). Each links to the run in the Argo UI when ``CONTRIBFLOW_ARGO_UI_URL``
is set.

A notification never fails the run: each attempt has a timeout (``CONTRIBFLOW_NOTIFY_TIMEOUT_S``),
a failed attempt (no answer, or not 2xx) is retried once, and a second failure is logged as a
warning that shows the address as ``contribflow.redact.url`` does (the webhook URL is a credential,
from a Secret: it is never logged).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from urllib.parse import quote

from contribflow import logs, redact
from contribflow.settings import Settings

log = logs.get("notify")

RETRY_PAUSE_S = 1.0
"""The pause before the one retry (a webhook's brief hiccup; a longer outage is not waited out)."""
REASONS = {
    "run_failed": "the run failed",
    "file_late": "the file arrived after its deadline",
    "not_published": "the marts were not published",
    "published_late": "the marts were published after their deadline",
    "quarantine_ratio": "more rows were quarantined than the SLA allows",
}
"""What each missed item of finish's SLA outcome (meta.run_sla.missed) means, in words."""


@dataclass(frozen=True)
class RunSummary:
    """What a notification says about a run (finish fills it)."""

    run_id: str
    logical_date: dt.date
    status: str
    """Argo's workflow status: Succeeded, Failed or Error."""
    run_succeeded: bool
    missed: tuple[str, ...] = ()
    """finish's SLA outcome: file_late, not_published, published_late, quarantine_ratio, run_failed."""
    steps_not_successful: tuple[str, ...] = ()
    rows_in: int | None = None
    rows_quarantined: int | None = None
    quarantine_ratio: float | None = None
    file_seconds_late: int | None = None
    workflow_name: str = ""
    namespace: str = ""

    @property
    def noteworthy(self) -> bool:
        """A failed run, a late file or any missed SLA item: what is notified."""
        return not self.run_succeeded or bool(self.missed)

    def headline(self) -> str:
        what = "failed" if not self.run_succeeded else "missed its SLA"
        return f"ContribFlow run for {self.logical_date.isoformat()} {what} ({self.status})"

    def reasons(self) -> list[str]:
        return [REASONS.get(item, item) for item in self.missed]


class Notifier(Protocol):
    def run_finished(self, summary: RunSummary) -> bool:
        """Tell of a noteworthy run; True when told. Never raises."""


def argo_link(settings: Settings, summary: RunSummary) -> str | None:
    """The run's page in the Argo UI (``<base>/workflows/<namespace>/<name>``), when all three are known."""
    if not (settings.argo_ui_url and summary.workflow_name and summary.namespace):
        return None
    namespace, name = quote(summary.namespace, safe=""), quote(summary.workflow_name, safe="")
    return f"{settings.argo_ui_url}/workflows/{namespace}/{name}"


def _facts(summary: RunSummary) -> list[tuple[str, str]]:
    """The summary as (label, value) lines, for the chat formats."""
    lines = [("Run date", summary.logical_date.isoformat()), ("Status", summary.status),
             ("Run id", summary.run_id)]
    if summary.missed:
        lines.append(("Missed", "; ".join(summary.reasons())))
    if summary.steps_not_successful:
        lines.append(("Steps not successful", ", ".join(summary.steps_not_successful)))
    if summary.file_seconds_late:
        lines.append(("File late by", f"{summary.file_seconds_late // 60} min"))
    if summary.rows_in is not None:
        ratio = "" if summary.quarantine_ratio is None else f" ({summary.quarantine_ratio:.2%})"
        lines.append(("Rows", f"{summary.rows_in} in, {summary.rows_quarantined or 0} quarantined{ratio}"))
    return lines


def payload(summary: RunSummary, fmt: str, link: str | None) -> dict[str, Any]:
    """The JSON body posted for ``summary`` in the format ``fmt`` (generic, slack, teams)."""
    if fmt == "slack":
        text = "\n".join(f"*{label}:* {value}" for label, value in _facts(summary))
        blocks: list[dict[str, Any]] = [
            {"type": "header", "text": {"type": "plain_text", "text": summary.headline()}},
            {"type": "section", "text": {"type": "mrkdwn", "text": text}}]
        if link:
            blocks.append({"type": "actions", "elements": [
                {"type": "button", "text": {"type": "plain_text", "text": "Open in Argo"}, "url": link}]})
        return {"text": summary.headline(), "blocks": blocks}
    if fmt == "teams":
        card: dict[str, Any] = {
            "$schema": "http://adaptivecards.io/schemas/adaptive-card.json", "type": "AdaptiveCard",
            "version": "1.4",
            "body": [{"type": "TextBlock", "text": summary.headline(), "weight": "Bolder", "size": "Medium",
                      "wrap": True},
                     {"type": "FactSet", "facts": [{"title": label, "value": value}
                                                   for label, value in _facts(summary)]}]}
        if link:
            card["actions"] = [{"type": "Action.OpenUrl", "title": "Open in Argo", "url": link}]
        return {"type": "message", "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}]}
    body = asdict(summary)
    body.update(event="contribflow.run.finished", logical_date=summary.logical_date.isoformat(),
                missed=list(summary.missed), steps_not_successful=list(summary.steps_not_successful),
                reasons=summary.reasons(), summary=summary.headline(), argo_url=link)
    return body


class Webhook:
    """Posts a noteworthy run's summary to a webhook: one retry, a timeout per attempt, never raises."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.notify_webhook_url

    def run_finished(self, summary: RunSummary) -> bool:
        body = json.dumps(payload(summary, self.settings.notify_format, argo_link(self.settings, summary)),
                          default=str).encode("utf-8")
        problem = ""
        for attempt in (1, 2):
            problem = self._post(body)
            if not problem:
                log.info(f"notified {redact.url(self.url)} of run {summary.run_id} ({summary.logical_date})")
                return True
            if attempt == 1:
                time.sleep(RETRY_PAUSE_S)
        log.warning(f"notification of run {summary.run_id} ({summary.logical_date}) to {redact.url(self.url)} "
                    f"failed twice: {problem}; the run's outcome is unchanged")
        return False

    def _post(self, body: bytes) -> str:
        """'' when the webhook took it (2xx), else what went wrong, without the URL."""
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "User-Agent": "contribflow-notify"})
        try:
            with urllib.request.urlopen(request, timeout=self.settings.notify_timeout_s) as response:
                response.read(4096)
                return "" if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:  # not 2xx (its text may quote the URL: not kept)
            return f"HTTP {exc.code}"
        except urllib.error.URLError as exc:
            reason = exc.reason
            return f"{type(reason).__name__}: {getattr(reason, 'strerror', None) or 'no answer'}" \
                if isinstance(reason, OSError) else "the address could not be reached"
        except TimeoutError:
            return f"no answer within {self.settings.notify_timeout_s:g} s"
        except (OSError, ValueError) as exc:  # a reset connection, a bad status line
            return type(exc).__name__


def notifiers(settings: Settings) -> list[Notifier]:
    """The notifiers the settings configure ([] when no webhook is set)."""
    return [Webhook(settings)] if settings.notify_webhook_url else []


def run_finished(settings: Settings, summary: RunSummary) -> str:
    """Tell every configured notifier of a noteworthy run. Returns what happened, for finish's
    record: ``not needed``, ``not configured``, ``sent`` or ``failed``. Never raises."""
    if not summary.noteworthy:
        return "not needed"
    found = notifiers(settings)
    if not found:
        return "not configured"
    results = []
    for notifier in found:
        try:
            results.append(notifier.run_finished(summary))
        except Exception as exc:  # a notifier never fails the run
            log.warning(f"notifier {type(notifier).__name__} failed: {type(exc).__name__}")
            results.append(False)
    return "sent" if all(results) else "failed"
