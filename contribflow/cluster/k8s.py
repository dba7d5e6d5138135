"""Names and numbers the cluster side agrees on: the Hera workflows, the images, the Helm chart and
the cluster CLI all read them from here (for the default release name ``contribflow``)."""

from __future__ import annotations

NAMESPACE = "contribflow"
WORKFLOW_TEMPLATE = "contribflow-daily"
CRON_WORKFLOW = "contribflow-daily"
BACKFILL_TEMPLATE = "contribflow-backfill"
APPLY_TEMPLATE = "contribflow-apply-request"
AUDIT_CRON_WORKFLOW = "contribflow-audit"
"""The weekly CronWorkflow of the auditor's checks (``contribflow verify``)."""
SERVICE_ACCOUNT = "contribflow-workflow"
CONFIGMAP = "contribflow-settings"
"""Non-secret settings: PGHOST, PGPORT, PGDATABASE, PGSSLMODE, CONTRIBFLOW_ENV, …"""
DB_SECRET = "contribflow-db"
"""Keys ``<role>-username`` and ``<role>-password`` for each database role below."""
PSEUDONYM_SECRET = "contribflow-pseudonym"
PSEUDONYM_SECRET_KEY = "hmac-key"
NOTIFY_SECRET = "contribflow-notify"
"""The notification webhook's URL (key ``webhook-url``), read by finish; optional: without it,
nothing is posted. Never created by the chart (the URL is a credential)."""
NOTIFY_SECRET_KEY = "webhook-url"
LANDING_PVC = "contribflow-landing"
LANDING_MOUNT = "/data/landing"
OUTPUTS_DIR = "/tmp/outputs"
DBT_TARGET_DIR = "/tmp/dbt-target"
RUN_AS_USER = 10001
"""The fixed non-root UID (and GID) of every image and every workflow pod."""
DB_ROLES = ("migrator", "loader", "transformer", "analyst", "auditor")


def db_secret_keys(role: str) -> tuple[str, str]:
    if role not in DB_ROLES:
        raise ValueError(f"unknown database role {role!r}; known: {', '.join(DB_ROLES)}")
    return f"{role}-username", f"{role}-password"
