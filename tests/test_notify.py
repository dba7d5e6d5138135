"""Notifications (issue 29 part 6): finish posts a failed run, a late file or a missed SLA to a
webhook (contribflow/notify.py). A real HTTP server on 127.0.0.1 receives each post and the test
reads what arrived; a server answering 500 then 200 shows the one retry; a dead server and a slow
one show the run's outcome unchanged and a warning that never holds the URL's secret parts."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from contribflow import cli, finish, notify, redact
from contribflow.settings import Settings, SettingsError

DAY = dt.date(2026, 11, 26)
SECRET_PATH = "/services/T000/B000/hunter2-webhook-secret"


@pytest.fixture(autouse=True)
def _no_proxy_no_pause(monkeypatch):
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(notify, "RETRY_PAUSE_S", 0.05)


@contextmanager
def webhook(statuses: list[int] | None = None, delay_s: float = 0.0) -> Iterator[tuple[str, list[dict]]]:
    """A webhook on loopback: answers each post with the next of ``statuses`` (then 200), after
    ``delay_s``; yields its URL (with a secret-like path) and the posts it received."""
    answers = list(statuses or [])
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"path": self.path, "content_type": self.headers["Content-Type"],
                             "body": json.loads(body)})
            time.sleep(delay_s)
            status = answers.pop(0) if answers else 200
            try:
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (its timeout)
                pass

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}{SECRET_PATH}", received
    finally:
        server.shutdown()
        server.server_close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings(url: str, **env: str) -> Settings:
    return Settings.from_env({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL": url, "CONTRIBFLOW_RUN_ID": "run-42",
                              "CONTRIBFLOW_ARGO_UI_URL": "https://argo.example.com/", **env})


SUMMARY = notify.RunSummary(
    run_id="run-42", logical_date=DAY, status="Failed", run_succeeded=False,
    missed=("file_late", "not_published", "run_failed"), steps_not_successful=("ingest",), rows_in=1000,
    rows_quarantined=30, quarantine_ratio=0.03, file_seconds_late=5400, workflow_name="contribflow-daily-x7k2p",
    namespace="contribflow")
LINK = "https://argo.example.com/workflows/contribflow/contribflow-daily-x7k2p"


# --- what is posted ---------------------------------------------------------------------------------

def test_a_failed_run_is_posted_as_generic_json_with_its_summary_and_the_argo_link():
    with webhook() as (url, received):
        assert notify.run_finished(settings(url), SUMMARY) == "sent"
    [post] = received
    assert post["path"] == SECRET_PATH and post["content_type"] == "application/json"
    body = post["body"]
    assert body["event"] == "contribflow.run.finished" and body["run_id"] == "run-42"
    assert body["logical_date"] == "2026-11-26" and body["status"] == "Failed" and body["run_succeeded"] is False
    assert body["missed"] == ["file_late", "not_published", "run_failed"]
    assert body["reasons"] == ["the file arrived after its deadline", "the marts were not published", "the run failed"]
    assert body["steps_not_successful"] == ["ingest"]
    assert (body["rows_in"], body["rows_quarantined"], body["quarantine_ratio"], body["file_seconds_late"]) == \
        (1000, 30, 0.03, 5400)
    assert body["argo_url"] == LINK and body["summary"] == "ContribFlow run for 2026-11-26 failed (Failed)"


def test_slack_and_teams_get_their_own_shapes_with_the_same_facts_and_link():
    with webhook() as (url, received):
        assert notify.run_finished(settings(url, CONTRIBFLOW_NOTIFY_FORMAT="slack"), SUMMARY) == "sent"
        assert notify.run_finished(settings(url, CONTRIBFLOW_NOTIFY_FORMAT="teams"), SUMMARY) == "sent"
    slack, teams = (r["body"] for r in received)
    assert slack["text"] == "ContribFlow run for 2026-11-26 failed (Failed)"
    header, section, actions = slack["blocks"]
    assert header["type"] == "header" and section["text"]["type"] == "mrkdwn"
    for fact in ("*Run date:* 2026-11-26", "*Run id:* run-42", "*Missed:* the file arrived after its deadline",
                 "*Steps not successful:* ingest", "*File late by:* 90 min", "*Rows:* 1000 in, 30 quarantined (3.00%)"):
        assert fact in section["text"]["text"]
    assert actions["elements"][0]["url"] == LINK
    assert teams["type"] == "message"
    [attachment] = teams["attachments"]
    assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
    card = attachment["content"]
    assert card["type"] == "AdaptiveCard" and card["actions"] == [
        {"type": "Action.OpenUrl", "title": "Open in Argo", "url": LINK}]
    facts = {f["title"]: f["value"] for f in card["body"][1]["facts"]}
    assert facts["Status"] == "Failed" and facts["Run id"] == "run-42" and "the run failed" in facts["Missed"]


def test_without_the_ui_address_or_the_workflow_name_there_is_no_link():
    plain = Settings.from_env({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL": "http://127.0.0.1:9/x"})
    assert notify.argo_link(plain, SUMMARY) is None
    assert notify.payload(SUMMARY, "generic", None)["argo_url"] is None
    assert "actions" not in notify.payload(SUMMARY, "teams", None)["attachments"][0]["content"]
    local = notify.RunSummary(run_id="r", logical_date=DAY, status="Failed", run_succeeded=False)
    assert notify.argo_link(settings("http://127.0.0.1:9/x"), local) is None


def test_a_good_run_is_not_posted_and_no_webhook_means_not_configured():
    good = notify.RunSummary(run_id="r", logical_date=DAY, status="Succeeded", run_succeeded=True)
    with webhook() as (url, received):
        assert notify.run_finished(settings(url), good) == "not needed"
        late = notify.RunSummary(run_id="r", logical_date=DAY, status="Succeeded", run_succeeded=True,
                                 missed=("file_late",))
        assert notify.run_finished(settings(url), late) == "sent"
    assert len(received) == 1 and received[0]["body"]["summary"].endswith("missed its SLA (Succeeded)")
    assert notify.run_finished(Settings.from_env({}), SUMMARY) == "not configured"


# --- retry, timeout, a dead webhook -----------------------------------------------------------------

def test_a_500_is_retried_once_and_the_second_attempt_is_enough():
    with webhook([500]) as (url, received):
        assert notify.run_finished(settings(url), SUMMARY) == "sent"
    assert len(received) == 2 and received[0]["body"] == received[1]["body"]


def test_two_failures_give_up_after_one_retry_with_a_warning_that_hides_the_secret(caplog):
    with webhook([500, 503, 200]) as (url, received), caplog.at_level(logging.WARNING):
        assert notify.run_finished(settings(url), SUMMARY) == "failed"
    assert len(received) == 2
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "HTTP 503" in warning and "http://127.0.0.1:" in warning and "/…" in warning
    assert "hunter2" not in warning and "services" not in warning


@pytest.mark.parametrize("kind", ["dead", "slow"])
def test_a_dead_or_slow_webhook_costs_two_timeouts_at_most_and_is_only_a_warning(kind, caplog):
    with webhook(delay_s=2.0) as (slow_url, received):
        url = f"http://127.0.0.1:{closed_port()}{SECRET_PATH}" if kind == "dead" else slow_url
        started = time.monotonic()
        with caplog.at_level(logging.WARNING):
            assert notify.run_finished(settings(url, CONTRIBFLOW_NOTIFY_TIMEOUT_S="0.3"), SUMMARY) == "failed"
        assert time.monotonic() - started < 1.5
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "failed twice" in warning and "hunter2" not in warning
    assert ("no answer within 0.3 s" in warning or "timed out" in warning.lower()) if kind == "slow" \
        else "ConnectionRefusedError" in warning


def test_a_notifier_that_raises_never_fails_the_run(monkeypatch, caplog):
    class Broken:
        def run_finished(self, summary):
            raise RuntimeError("https://hooks.example/hunter2")

    monkeypatch.setattr(notify, "notifiers", lambda s: [Broken()])
    with caplog.at_level(logging.WARNING):
        assert notify.run_finished(Settings.from_env({}), SUMMARY) == "failed"
    assert "hunter2" not in caplog.text and "RuntimeError" in caplog.text


def test_redact_url_keeps_scheme_host_and_port_only():
    assert redact.url("https://hooks.slack.com/services/T0/B0/XyZ") == "https://hooks.slack.com/…"
    assert redact.url("https://user:hunter2@example.com:8443/?token=hunter2") == "https://example.com:8443/…"
    assert redact.url("http://127.0.0.1:8080/") == "http://127.0.0.1:8080/"
    assert redact.url("not a url hunter2") == "[an address that is not a URL]"
    assert redact.url("http://h:99999999/hunter2") == "[an address that is not a URL]"


# --- the settings -----------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "message"), [
    ({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL": "ftp://hooks.example/hunter2"}, "is not an http:// or https:// URL"),
    ({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL": "hooks.slack.com/services/hunter2"}, "is not an http:// or https:// URL"),
    ({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL": "https:///hunter2"}, "with a host"),
    ({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL": "https://h:99999/hunter2"}, "is not a URL"),
    ({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL": "https://h/hunter2 x"}, "whitespace"),
    ({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL": "https://h/hunter2", "CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE": "/x"},
     "are both set"),
    ({"CONTRIBFLOW_NOTIFY_FORMAT": "Slack"}, "CONTRIBFLOW_NOTIFY_FORMAT='Slack' is not one of generic, slack, teams"),
    ({"CONTRIBFLOW_NOTIFY_FORMAT": "email"}, "is not one of generic, slack, teams"),
    ({"CONTRIBFLOW_NOTIFY_TIMEOUT_S": "0"}, "CONTRIBFLOW_NOTIFY_TIMEOUT_S='0' is out of range: a number from 0.1 to 60"),
    ({"CONTRIBFLOW_NOTIFY_TIMEOUT_S": "nan"}, "a number from 0.1 to 60 (seconds)"),
    ({"CONTRIBFLOW_NOTIFY_TIMEOUT_S": "61"}, "a number from 0.1 to 60 (seconds)"),
    ({"CONTRIBFLOW_ARGO_UI_URL": "argo.example.com"}, "CONTRIBFLOW_ARGO_UI_URL='argo.example.com' is not an http://"),
    ({"CONTRIBFLOW_WORKFLOW_NAMESPACE": "a\nb"}, "CONTRIBFLOW_WORKFLOW_NAMESPACE"),
])
def test_bad_notification_settings_are_refused_naming_the_setting_and_never_the_webhooks_secret(env, message):
    with pytest.raises(SettingsError, match=None) as refused:
        Settings.from_env(env)
    assert message in str(refused.value) and "hunter2" not in str(refused.value)
    assert next(iter(env)).split("_FILE")[0] in str(refused.value)


def test_the_webhook_url_may_come_from_a_file_and_never_shows_in_the_settings_repr(tmp_path):
    path = tmp_path / "webhook-url"
    path.write_text("https://hooks.slack.com/services/T0/B0/hunter2\n")
    given = Settings.from_env({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE": str(path)})
    assert given.notify_webhook_url == "https://hooks.slack.com/services/T0/B0/hunter2"
    assert "hunter2" not in repr(given)
    assert (given.notify_format, given.notify_timeout_s, given.argo_ui_url) == ("generic", 10.0, "")
    path.write_text("  \n")
    with pytest.raises(SettingsError, match="CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE=.* is empty"):
        Settings.from_env({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE": str(path)})
    path.write_text("ftp://x/hunter2")
    with pytest.raises(SettingsError, match="CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE") as refused:
        Settings.from_env({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE": str(path)})
    assert "hunter2" not in str(refused.value)
    with pytest.raises(SettingsError, match="cannot be read"):
        Settings.from_env({"CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE": str(tmp_path / "missing")})


# --- finish calls it; a failing webhook never fails the run ------------------------------------------

@pytest.mark.integration
def test_finish_notifies_a_missed_sla_and_a_dead_webhook_leaves_the_run_successful(database, sql, capsys,
                                                                                 monkeypatch):
    today = dt.datetime.now(dt.UTC).date()
    assert cli.main(["init-db", "--date", today.isoformat()]) == 0
    env = dict(os.environ, CONTRIBFLOW_SLA_FILE_DUE_S="0", CONTRIBFLOW_WORKFLOW_NAME="contribflow-daily-abc12",
               CONTRIBFLOW_WORKFLOW_NAMESPACE="contribflow", CONTRIBFLOW_ARGO_UI_URL="https://argo.example.com")
    with webhook() as (url, received):
        run = finish.run(Settings.from_env(dict(env, CONTRIBFLOW_RUN_ID="run-n1", CONTRIBFLOW_NOTIFY_WEBHOOK_URL=url)),
                         today, "Succeeded")
    assert run.details["notification"] == "sent"
    [post] = received
    body = post["body"]
    assert body["run_id"] == "run-n1" and body["logical_date"] == today.isoformat() and body["status"] == "Succeeded"
    assert body["missed"] == ["file_late"] and body["run_succeeded"] is True
    assert body["argo_url"] == "https://argo.example.com/workflows/contribflow/contribflow-daily-abc12"

    # a failed run with the webhook down: finish fails as the run did (not because of the webhook)
    dead = f"http://127.0.0.1:{closed_port()}{SECRET_PATH}"
    with pytest.raises(Exception, match="ended Failed"):
        finish.run(Settings.from_env(dict(env, CONTRIBFLOW_RUN_ID="run-n2", CONTRIBFLOW_NOTIFY_WEBHOOK_URL=dead)),
                   today, "Failed")
    # the CLI's finish of a successful run with the webhook down: exit 0, a redacted warning
    capsys.readouterr()
    # monkeypatch restores every variable (the SLA settings too): a later test in this worker must not
    # inherit a file deadline (it made the replay's local run find its file 12 days late).
    for var, value in dict(env, CONTRIBFLOW_RUN_ID="run-n3", CONTRIBFLOW_NOTIFY_WEBHOOK_URL=dead,
                           CONTRIBFLOW_NOTIFY_TIMEOUT_S="0.5").items():
        monkeypatch.setenv(var, value)
    assert cli.main(["finish", "--date", today.isoformat(), "--status", "Succeeded"]) == 0
    out = capsys.readouterr()
    assert "finish: run run-n3" in out.out and "succeeded" in out.out
    assert "notification of run run-n3" in out.err + out.out and "hunter2" not in out.err + out.out
    rows = dict(sql("select run_id, details->>'notification' from meta.etl_run where step = 'finish' "
                    "and run_id like %s", ("run-n%",)))
    assert rows == {"run-n1": "sent", "run-n2": "failed", "run-n3": "failed"}


# --- the chart: the URL from a Secret, the rest as settings ------------------------------------------

def test_the_chart_reads_the_url_from_an_optional_secret_and_never_from_values():
    from chart_render import CHART, docs, one, run_helm, template_text

    def finish_env(objects):
        daily = one(objects, "WorkflowTemplate", "contribflow-daily")
        container = next(t for t in daily["spec"]["templates"] if t["name"] == "finish")["container"]
        return {e["name"]: e for e in container["env"]}

    defaults = docs(template_text())
    assert finish_env(defaults)["CONTRIBFLOW_NOTIFY_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"] == \
        {"name": "contribflow-notify", "key": "webhook-url", "optional": True}
    data = one(defaults, "ConfigMap", "contribflow-settings")["data"]
    assert (data["CONTRIBFLOW_NOTIFY_FORMAT"], data["CONTRIBFLOW_NOTIFY_TIMEOUT_S"]) == ("generic", "10")
    assert "CONTRIBFLOW_ARGO_UI_URL" not in data and "CONTRIBFLOW_NOTIFY_WEBHOOK_URL" not in data
    assert not [o for o in defaults if o["kind"] == "Secret" and o["metadata"]["name"].endswith("-notify")]

    objects = docs(template_text("--values", str(CHART / "ci" / "events-minio-values.yaml")))
    assert finish_env(objects)["CONTRIBFLOW_NOTIFY_WEBHOOK_URL"]["valueFrom"]["secretKeyRef"] == \
        {"name": "contribflow-chat-webhook", "key": "webhook-url", "optional": True}
    data = one(objects, "ConfigMap", "contribflow-settings")["data"]
    assert (data["CONTRIBFLOW_NOTIFY_FORMAT"], data["CONTRIBFLOW_NOTIFY_TIMEOUT_S"],
            data["CONTRIBFLOW_ARGO_UI_URL"]) == ("slack", "5", "https://argo.example.com")
    # what the ConfigMap holds, the settings accept
    Settings.from_env({k: v for k, v in data.items() if k.startswith("CONTRIBFLOW_NOTIFY")
                       or k == "CONTRIBFLOW_ARGO_UI_URL"})
    # there is no values key for the URL itself: a URL in values is refused, as a bad format is
    for args, name in ((["--set", "notifications.webhook.url=https://hooks.slack.com/services/hunter2"], "url"),
                       (["--set", "notifications.webhook.format=email"], "notifications.webhook.format"),
                       (["--set", "notifications.webhook.timeoutSeconds=0"], "notifications.webhook.timeoutSeconds"),
                       (["--set", "notifications.argoUiBaseUrl=argo.example.com"], "notifications.argoUiBaseUrl")):
        result = run_helm("template", "contribflow", str(CHART), *args)
        assert result.returncode != 0 and name in result.stderr, (args, result.stderr)
