"""The one place that reads the environment.

Connections use libpq's own ``PG*`` variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE…),
so psycopg, dbt and psql all agree on the server without ContribFlow re-exporting anything.
``CONTRIBFLOW_DSN`` may replace them with one connection string.
"""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from contribflow import contract

DEV_PSEUDONYM_KEY = "DEV-ONLY-INSECURE-PSEUDONYM-KEY-do-not-use-in-production"
PRODUCTION = "production"
SCHEMA_DRIFT_POLICIES = ("refuse", "keep")
VOLUME_ACTIONS = ("warn", "fail")
RESENT_FILE_POLICIES = ("warn", "refuse")


class SettingsError(ValueError):
    """A setting is missing or has a value that cannot be used."""


def _float(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None


def _int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None


def _contract(env: dict[str, str]) -> contract.Contract:
    try:
        return contract.BASE.with_overrides(
            contract.parse_overrides(env.get("CONTRIBFLOW_CONTRACT_OVERRIDES", "")))
    except contract.ContractError as exc:
        raise SettingsError(str(exc)) from None


@dataclass(frozen=True)
class Settings:
    environment: str = "dev"
    landing_dir: Path = Path("data/landing")
    state_dir: Path = Path(".contribflow")
    dsn: str = ""
    pseudonym_key: str = DEV_PSEUDONYM_KEY
    reject_threshold: float = 0.05
    chunk_rows: int = 25_000
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    workflow_name: str = ""
    task_name: str = ""
    pod_name: str = ""
    outputs_dir: Path | None = None
    dbt_project_dir: Path = Path("dbt")
    dbt_target_dir: Path | None = None
    dbt_saved_parse: Path | None = None
    """A saved dbt parse (partial_parse.msgpack) to start an empty target folder from: the dbt image
    ships one made at build time (contribflow/transform.py)."""
    db_connect_attempts: int = 5
    db_connect_backoff_s: float = 1.0
    stale_after_s: int = 3600
    contract: contract.Contract = contract.BASE
    """The source contract in force: contract.toml with CONTRIBFLOW_CONTRACT_OVERRIDES applied."""
    schema_drift: str = "refuse"
    """An extra column in a file: ``refuse`` the file, or ``keep`` its values (raw.contributions.extra)."""
    volume_lookback_days: int = 7
    volume_min_history: int = 3
    volume_low_ratio: float = 0.5
    volume_high_ratio: float = 2.0
    volume_action: str = "warn"
    """A day's row count far from the trailing median: ``warn`` (recorded) or ``fail`` the ingest."""
    late_deadline_s: int = 0
    """How long pick waits for the run date's file, from its first attempt (0: not at all)."""
    late_poll_s: float = 30.0
    """How often ``pick --wait`` looks again."""
    resent_file: str = "warn"
    """A file whose content was loaded for another date: ``warn`` (recorded as DUPLICATE, nothing
    loaded) or ``refuse`` it (REFUSED, exit 1)."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        state_dir = Path(env.get("CONTRIBFLOW_STATE_DIR") or ".contribflow")
        outputs = env.get("CONTRIBFLOW_OUTPUTS_DIR")
        target = env.get("CONTRIBFLOW_DBT_TARGET_DIR")
        saved_parse = env.get("CONTRIBFLOW_DBT_SAVED_PARSE")
        settings = cls(
            environment=env.get("CONTRIBFLOW_ENV", "dev").strip().lower() or "dev",
            landing_dir=Path(env.get("CONTRIBFLOW_LANDING_DIR") or "data/landing"),
            state_dir=state_dir,
            dsn=env.get("CONTRIBFLOW_DSN", ""),
            pseudonym_key=env.get("CONTRIBFLOW_PSEUDONYM_KEY") or DEV_PSEUDONYM_KEY,
            reject_threshold=_float(env, "CONTRIBFLOW_REJECT_THRESHOLD", 0.05),
            chunk_rows=_int(env, "CONTRIBFLOW_CHUNK_ROWS", 25_000),
            run_id=env.get("CONTRIBFLOW_RUN_ID") or str(uuid.uuid4()),
            workflow_name=env.get("CONTRIBFLOW_WORKFLOW_NAME", ""),
            task_name=env.get("CONTRIBFLOW_TASK_NAME", ""),
            pod_name=env.get("CONTRIBFLOW_POD_NAME", ""),
            outputs_dir=Path(outputs) if outputs else None,
            dbt_project_dir=Path(env.get("CONTRIBFLOW_DBT_PROJECT_DIR") or "dbt"),
            dbt_target_dir=Path(target) if target else None,
            dbt_saved_parse=Path(saved_parse) if saved_parse else None,
            db_connect_attempts=_int(env, "CONTRIBFLOW_DB_CONNECT_ATTEMPTS", 5),
            db_connect_backoff_s=_float(env, "CONTRIBFLOW_DB_CONNECT_BACKOFF_S", 1.0),
            stale_after_s=_int(env, "CONTRIBFLOW_STALE_AFTER_S", 3600),
            contract=_contract(env),
            schema_drift=env.get("CONTRIBFLOW_SCHEMA_DRIFT", "refuse").strip().lower() or "refuse",
            volume_lookback_days=_int(env, "CONTRIBFLOW_VOLUME_LOOKBACK_DAYS", 7),
            volume_min_history=_int(env, "CONTRIBFLOW_VOLUME_MIN_HISTORY", 3),
            volume_low_ratio=_float(env, "CONTRIBFLOW_VOLUME_LOW_RATIO", 0.5),
            volume_high_ratio=_float(env, "CONTRIBFLOW_VOLUME_HIGH_RATIO", 2.0),
            volume_action=env.get("CONTRIBFLOW_VOLUME_ACTION", "warn").strip().lower() or "warn",
            late_deadline_s=_int(env, "CONTRIBFLOW_LATE_DEADLINE_S", 0),
            late_poll_s=_float(env, "CONTRIBFLOW_LATE_POLL_S", 30.0),
            resent_file=env.get("CONTRIBFLOW_RESENT_FILE", "warn").strip().lower() or "warn",
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not 0.0 <= self.reject_threshold <= 1.0:
            raise SettingsError(
                f"CONTRIBFLOW_REJECT_THRESHOLD={self.reject_threshold} must be between 0 and 1"
            )
        if self.chunk_rows < 1:
            raise SettingsError(f"CONTRIBFLOW_CHUNK_ROWS={self.chunk_rows} must be at least 1")
        if self.db_connect_attempts < 1:
            raise SettingsError("CONTRIBFLOW_DB_CONNECT_ATTEMPTS must be at least 1")
        if self.schema_drift not in SCHEMA_DRIFT_POLICIES:
            raise SettingsError(f"CONTRIBFLOW_SCHEMA_DRIFT={self.schema_drift!r} must be one of "
                                f"{', '.join(SCHEMA_DRIFT_POLICIES)}")
        if self.volume_action not in VOLUME_ACTIONS:
            raise SettingsError(f"CONTRIBFLOW_VOLUME_ACTION={self.volume_action!r} must be one of "
                                f"{', '.join(VOLUME_ACTIONS)}")
        if self.volume_lookback_days < 1 or self.volume_min_history < 1:
            raise SettingsError("CONTRIBFLOW_VOLUME_LOOKBACK_DAYS and CONTRIBFLOW_VOLUME_MIN_HISTORY "
                                "must be at least 1")
        if not 0.0 <= self.volume_low_ratio <= 1.0 <= self.volume_high_ratio:
            raise SettingsError("CONTRIBFLOW_VOLUME_LOW_RATIO must be between 0 and 1 and "
                                "CONTRIBFLOW_VOLUME_HIGH_RATIO at least 1 "
                                f"(got {self.volume_low_ratio}, {self.volume_high_ratio})")
        if self.resent_file not in RESENT_FILE_POLICIES:
            raise SettingsError(f"CONTRIBFLOW_RESENT_FILE={self.resent_file!r} must be one of "
                                f"{', '.join(RESENT_FILE_POLICIES)}")
        if self.late_deadline_s < 0 or self.late_poll_s <= 0:
            raise SettingsError("CONTRIBFLOW_LATE_DEADLINE_S must be >= 0 and CONTRIBFLOW_LATE_POLL_S > 0")

    @property
    def uses_dev_key(self) -> bool:
        return self.pseudonym_key == DEV_PSEUDONYM_KEY

    def require_pseudonym_key(self) -> bytes:
        """The HMAC key; the dev default is refused in production."""
        if self.uses_dev_key and self.environment == PRODUCTION:
            raise SettingsError(
                "CONTRIBFLOW_ENV=production but CONTRIBFLOW_PSEUDONYM_KEY is unset: "
                "refusing to pseudonymise with the dev default key"
            )
        return self.pseudonym_key.encode("utf-8")

    @property
    def where(self) -> str:
        """Where a step ran, for meta.etl_run: the pod in Argo, the host locally."""
        return self.pod_name or socket.gethostname()
