"""The one place that reads the environment.

Connections use libpq's own ``PG*`` variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE…),
so psycopg, dbt and psql all agree on the server without ContribFlow re-exporting anything.
``CONTRIBFLOW_DSN`` may replace them with one connection string (dbt gets its parts as PG*
variables: contribflow/db.py ``libpq_env``).

Every setting is checked when it is read, before a stage does any work: a value outside its format
or range is refused with a message naming the variable, the value and what is accepted. Numbers
are plain decimals (``1.5``, ``1e-05`` as Helm writes small floats), never ``nan``, ``inf``, ``0x10``
or ``1_000``; enumerations are exact (``production``, not ``prod`` or ``Production``). An empty
variable means "unset" (the default), as a ConfigMap may render it.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from contribflow import contract

DEV_PSEUDONYM_KEY = "DEV-ONLY-INSECURE-PSEUDONYM-KEY-do-not-use-in-production"
PRODUCTION = "production"
ENVIRONMENTS = ("dev", PRODUCTION)
SCHEMA_DRIFT_POLICIES = ("refuse", "keep")
VOLUME_ACTIONS = ("warn", "fail")
RESENT_FILE_POLICIES = ("warn", "refuse")
COMPLETION_POLICIES = ("auto", "control", "manifest", "stable")
NOTIFY_FORMATS = ("generic", "slack", "teams")
"""The shape of the notification webhook's payload (contribflow/notify.py)."""
"""How pick knows a source file is complete (contribflow/ingest/completion.py)."""
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
MIN_PRODUCTION_KEY_CHARS = 32
"""A shorter HMAC key is guessable; the chart generates 64 characters."""

_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?", re.ASCII)
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", re.ASCII)
"""A run id names a folder (<state>/runs/<run id>) and is an Argo uid in the cluster: no slash, no
``..``, no space or control character."""
_LABEL = re.compile(r"[^\x00-\x1f\x7f]{0,253}")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+/-]{0,127}", re.ASCII)
"""A git revision as a build records it: a commit hash, or `git describe`'s text (v1.2-3-gabc1234)."""
_IMAGE_DIGEST = re.compile(r"sha256:[0-9a-f]{64}", re.ASCII)


class SettingsError(ValueError):
    """A setting is missing or has a value that cannot be used."""


@dataclass(frozen=True)
class Bound:
    """The accepted range of a numeric setting, and what its unit is called in messages."""

    low: float
    high: float
    unit: str
    integer: bool = False

    def describe(self) -> str:
        kind = "a whole number" if self.integer else "a number"
        return f"{kind} from {_plain(self.low)} to {_plain(self.high)} ({self.unit})"


def _plain(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


BOUNDS: dict[str, Bound] = {
    "CONTRIBFLOW_REJECT_THRESHOLD": Bound(0, 1, "share of rows"),
    "CONTRIBFLOW_CHUNK_ROWS": Bound(1, 1_000_000, "rows", integer=True),
    "CONTRIBFLOW_DB_CONNECT_ATTEMPTS": Bound(1, 100, "attempts", integer=True),
    "CONTRIBFLOW_DB_CONNECT_BACKOFF_S": Bound(0, 60, "seconds"),
    "CONTRIBFLOW_STALE_AFTER_S": Bound(0, 7 * 86_400, "seconds", integer=True),
    "CONTRIBFLOW_VOLUME_LOOKBACK_DAYS": Bound(1, 366, "days", integer=True),
    "CONTRIBFLOW_VOLUME_MIN_HISTORY": Bound(1, 366, "days", integer=True),
    "CONTRIBFLOW_VOLUME_LOW_RATIO": Bound(0, 1, "times the median"),
    "CONTRIBFLOW_VOLUME_HIGH_RATIO": Bound(1, 1000, "times the median"),
    "CONTRIBFLOW_LATE_DEADLINE_S": Bound(0, 86_400, "seconds", integer=True),
    "CONTRIBFLOW_LATE_POLL_S": Bound(0.1, 3600, "seconds"),
    "CONTRIBFLOW_STABLE_S": Bound(0, 3600, "seconds"),
    "CONTRIBFLOW_FUTURE_TOLERANCE_DAYS": Bound(0, 7, "days", integer=True),
    "CONTRIBFLOW_SLA_FILE_DUE_S": Bound(0, 2 * 86_400, "seconds after the run date's 00:00 UTC", integer=True),
    "CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S": Bound(0, 2 * 86_400, "seconds after the run date's 00:00 UTC",
                                                integer=True),
    "CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO": Bound(0, 1, "share of rows"),
    "CONTRIBFLOW_NOTIFY_TIMEOUT_S": Bound(0.1, 60, "seconds"),
    "CONTRIBFLOW_REQUEST_TTL_HOURS": Bound(1, 720, "hours", integer=True),
}
"""Every numeric setting's range, checked at start (docs/reference.md lists the same)."""


def _number(env: dict[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    bound = BOUNDS[name]
    pattern = _INTEGER if bound.integer else _DECIMAL
    if not pattern.fullmatch(raw):
        raise SettingsError(f"{name}={raw!r} is not {bound.describe()}")
    value = int(raw) if bound.integer else float(raw)
    if not math.isfinite(value) or not bound.low <= value <= bound.high:
        raise SettingsError(f"{name}={raw!r} is out of range: {bound.describe()}")
    return value


def _int(env: dict[str, str], name: str, default: int) -> int:
    return int(_number(env, name, default))


def _optional_int(env: dict[str, str], name: str) -> int | None:
    """A whole-number setting that may be unset (None: not checked)."""
    return None if env.get(name) in (None, "") else _int(env, name, 0)


def _optional_number(env: dict[str, str], name: str) -> float | None:
    return None if env.get(name) in (None, "") else _number(env, name, 0.0)


def _choice(env: dict[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw not in allowed:
        raise SettingsError(f"{name}={raw!r} is not one of {', '.join(allowed)} (exactly, in lower case)")
    return raw


def _path(env: dict[str, str], name: str, default: str | None, kind: str) -> Path | None:
    """A folder (``kind`` "dir") or file setting: refused when something of the other kind, or a
    FIFO or device, is already there (it does not have to exist yet)."""
    raw = env.get(name) or default
    if raw is None:
        return None
    path = Path(raw)
    try:
        is_dir, exists = path.is_dir(), path.exists()
    except OSError as exc:
        raise SettingsError(f"{name}={raw!r} cannot be looked at: {exc.strerror}") from None
    if exists and kind == "dir" and not is_dir:
        raise SettingsError(f"{name}={raw!r} is not a folder")
    if exists and kind == "file" and not path.is_file():
        raise SettingsError(f"{name}={raw!r} is not a regular file")
    return path


def _text(env: dict[str, str], name: str, pattern: re.Pattern[str], what: str) -> str:
    raw = env.get(name, "")
    if raw and not pattern.fullmatch(raw):
        raise SettingsError(f"{name}={raw[:80]!r} is not {what}")
    return raw


def _image_digests(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """CONTRIBFLOW_IMAGE_DIGESTS: a JSON object, image name -> sha256:<64 hex>, recorded with each
    publication (contribflow/warehouse/publication.py)."""
    name, raw = "CONTRIBFLOW_IMAGE_DIGESTS", env.get("CONTRIBFLOW_IMAGE_DIGESTS", "")
    if not raw:
        return ()
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and _LABEL.fullmatch(k) and k and isinstance(v, str) and _IMAGE_DIGEST.fullmatch(v)
            for k, v in value.items()):
        raise SettingsError(f"{name}={raw[:80]!r} is not a JSON object of image name -> digest "
                            '(e.g. {"dbt": "sha256:<64 hex>"})')
    return tuple(sorted(value.items()))


def _dsn(env: dict[str, str]) -> str:
    """CONTRIBFLOW_DSN, checked to be a libpq connection string (its text is never repeated: it may
    hold a password)."""
    raw = env.get("CONTRIBFLOW_DSN", "")
    if not raw:
        return raw
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = {k: str(v) for k, v in conninfo_to_dict(raw).items() if v is not None}
    except Exception as exc:  # psycopg.ProgrammingError; its text quotes the string: not repeated
        raise SettingsError("CONTRIBFLOW_DSN is not a libpq connection string (key=value pairs or a "
                            f"postgresql:// URI): {type(exc).__name__}") from None
    ports = parts.get("port", "5432").split(",")
    if not all(p.isascii() and p.isdigit() and 1 <= int(p) <= 65535 for p in ports):
        raise SettingsError(f"CONTRIBFLOW_DSN has port={parts['port'][:40]!r}: a port is a whole number "
                            "from 1 to 65535")
    if parts.get("sslmode", "prefer") not in SSLMODES:
        raise SettingsError(f"CONTRIBFLOW_DSN has sslmode={parts['sslmode'][:40]!r}: one of {', '.join(SSLMODES)}")
    return raw


def _run_id(env: dict[str, str]) -> str:
    raw = env.get("CONTRIBFLOW_RUN_ID")
    if not raw:
        return str(uuid.uuid4())
    if not RUN_ID.fullmatch(raw):
        raise SettingsError(f"CONTRIBFLOW_RUN_ID={raw[:80]!r} is not a run id: 1 to 128 letters, digits, "
                            "'.', '_' or '-', starting with a letter or digit")
    return raw


def _url(raw: str, name: str, secret: bool) -> str:
    """An http(s) address with a host. A secret one (a Slack webhook's path is its credential) is
    never repeated in the refusal: only what is wrong with it."""
    from urllib.parse import urlsplit

    shown = "" if secret else f"={raw[:120]!r}"
    try:
        parts = urlsplit(raw)
        parts.port  # noqa: B018 (raises ValueError on a port out of range)
    except ValueError:
        raise SettingsError(f"{name}{shown} is not a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SettingsError(f"{name}{shown} is not an http:// or https:// URL with a host")
    if any(c.isspace() or ord(c) < 0x20 for c in raw):
        raise SettingsError(f"{name}{shown} holds whitespace or a control character")
    return raw


def _webhook_url(env: dict[str, str]) -> str:
    """CONTRIBFLOW_NOTIFY_WEBHOOK_URL, or the file CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE names (a
    mounted Secret, a file outside the repository): one of them, never both."""
    name, file_name = "CONTRIBFLOW_NOTIFY_WEBHOOK_URL", "CONTRIBFLOW_NOTIFY_WEBHOOK_URL_FILE"
    raw, path = env.get(name, ""), env.get(file_name, "")
    if raw and path:
        raise SettingsError(f"{name} and {file_name} are both set: give the webhook URL one way")
    if path:
        try:
            raw = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SettingsError(f"{file_name}={path[:200]!r} cannot be read: "
                                f"{getattr(exc, 'strerror', None) or type(exc).__name__}") from None
        if not raw:
            raise SettingsError(f"{file_name}={path[:200]!r} is empty")
        name = f"{file_name} ({path[:200]!r})"
    return _url(raw, name, secret=True) if raw else ""


def _key(env: dict[str, str], environment: str) -> str:
    raw = env.get("CONTRIBFLOW_PSEUDONYM_KEY") or DEV_PSEUDONYM_KEY
    if raw != raw.strip():
        raise SettingsError("CONTRIBFLOW_PSEUDONYM_KEY starts or ends with whitespace (a newline from the "
                            "file the Secret was made from?): remove it, every taxpayer_key depends on it")
    if environment == PRODUCTION and raw != DEV_PSEUDONYM_KEY and len(raw) < MIN_PRODUCTION_KEY_CHARS:
        raise SettingsError(f"CONTRIBFLOW_PSEUDONYM_KEY has {len(raw)} characters; CONTRIBFLOW_ENV=production "
                            f"needs at least {MIN_PRODUCTION_KEY_CHARS} (a short HMAC key can be guessed)")
    return raw


def _contract(env: dict[str, str]) -> contract.Contract:
    try:
        return contract.BASE.with_overrides(
            contract.parse_overrides(env.get("CONTRIBFLOW_CONTRACT_OVERRIDES", "")))
    except contract.ContractError as exc:
        text = str(exc)
        name = "CONTRIBFLOW_CONTRACT_OVERRIDES"
        raise SettingsError(text if text.startswith(name) else f"{name}: {text}") from None


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
    ships one made at build time (contribflow/warehouse/transform.py)."""
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
    completion: str = "auto"
    """How pick knows the file is complete: ``auto`` (a manifest or control file when the source
    sends one, else the stability window), ``control``, ``manifest`` or ``stable`` (completion.py)."""
    stable_s: float = 30.0
    """The stability window: the file's size, mtime and ctime unchanged for this long, watched by pick."""
    future_tolerance_days: int = 1
    """How many days after today (UTC) a run date may be: 1 covers a schedule in any time zone
    (a local date is at most one day ahead of UTC's) and clocks a little apart."""
    sla_file_due_s: int | None = None
    """The SLA: the run date's file is due this many seconds after the run date's 00:00 UTC (None:
    no file deadline). ``finish`` records how late it was (contribflow/finish.py)."""
    sla_publish_deadline_s: int | None = None
    """The SLA: the run date's marts are published by this many seconds after its 00:00 UTC."""
    signing_key_file: Path | None = None
    """The Ed25519 private key (PEM) that signs evidence packs (contribflow/audit/signing.py): in the
    cluster a Secret mounted as a file. Unset outside production: a dev key in the state folder."""
    sla_max_quarantine_ratio: float | None = None
    """The SLA: the largest acceptable share of a day's rows quarantined (below the reject threshold,
    which fails the file; this one only marks the SLA missed)."""
    workflow_namespace: str = ""
    """The Argo namespace of the run (``{{workflow.namespace}}``, for the link to the Argo UI)."""
    notify_webhook_url: str = field(default="", repr=False)
    """Where ``finish`` posts a failed run, a late file or a missed SLA (empty: nowhere). A secret:
    never logged, never repeated in an error (contribflow/notify.py)."""
    notify_format: str = "generic"
    """The payload's shape: ``generic`` JSON, ``slack`` or ``teams``."""
    notify_timeout_s: float = 10.0
    """Seconds each attempt to post may take (one retry after a failure)."""
    argo_ui_url: str = ""
    """The Argo UI's base address; the notification links to the run there (empty: no link)."""
    request_ttl_hours: int = 72
    """A correction request (issue 28) expires this many hours after it was made, decided or not:
    an approval long after the question was asked approves a situation that has moved on."""
    git_revision: str = "unknown"
    """The git revision of the code that runs (CONTRIBFLOW_GIT_REVISION; set where the image is built
    or deployed), recorded with each publication; ``unknown`` when unset."""
    image_digests: tuple[tuple[str, str], ...] = ()
    """The images' digests, where the deployment states them (CONTRIBFLOW_IMAGE_DIGESTS, a JSON object
    image name -> sha256:<hex>), recorded with each publication."""

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        environment = _choice(env, "CONTRIBFLOW_ENV", "dev", ENVIRONMENTS)
        settings = cls(
            environment=environment,
            landing_dir=_path(env, "CONTRIBFLOW_LANDING_DIR", "data/landing", "dir"),  # type: ignore[arg-type]
            state_dir=_path(env, "CONTRIBFLOW_STATE_DIR", ".contribflow", "dir"),  # type: ignore[arg-type]
            dsn=_dsn(env),
            pseudonym_key=_key(env, environment),
            reject_threshold=_number(env, "CONTRIBFLOW_REJECT_THRESHOLD", 0.05),
            chunk_rows=_int(env, "CONTRIBFLOW_CHUNK_ROWS", 25_000),
            run_id=_run_id(env),
            workflow_name=_text(env, "CONTRIBFLOW_WORKFLOW_NAME", _LABEL, "a name (no control character, "
                                "at most 253 characters)"),
            task_name=_text(env, "CONTRIBFLOW_TASK_NAME", _LABEL, "a name (no control character, "
                            "at most 253 characters)"),
            pod_name=_text(env, "CONTRIBFLOW_POD_NAME", _LABEL, "a name (no control character, "
                           "at most 253 characters)"),
            outputs_dir=_path(env, "CONTRIBFLOW_OUTPUTS_DIR", None, "dir"),
            dbt_project_dir=_path(env, "CONTRIBFLOW_DBT_PROJECT_DIR", "dbt", "dir"),  # type: ignore[arg-type]
            dbt_target_dir=_path(env, "CONTRIBFLOW_DBT_TARGET_DIR", None, "dir"),
            dbt_saved_parse=_path(env, "CONTRIBFLOW_DBT_SAVED_PARSE", None, "file"),
            db_connect_attempts=_int(env, "CONTRIBFLOW_DB_CONNECT_ATTEMPTS", 5),
            db_connect_backoff_s=_number(env, "CONTRIBFLOW_DB_CONNECT_BACKOFF_S", 1.0),
            stale_after_s=_int(env, "CONTRIBFLOW_STALE_AFTER_S", 3600),
            contract=_contract(env),
            schema_drift=_choice(env, "CONTRIBFLOW_SCHEMA_DRIFT", "refuse", SCHEMA_DRIFT_POLICIES),
            volume_lookback_days=_int(env, "CONTRIBFLOW_VOLUME_LOOKBACK_DAYS", 7),
            volume_min_history=_int(env, "CONTRIBFLOW_VOLUME_MIN_HISTORY", 3),
            volume_low_ratio=_number(env, "CONTRIBFLOW_VOLUME_LOW_RATIO", 0.5),
            volume_high_ratio=_number(env, "CONTRIBFLOW_VOLUME_HIGH_RATIO", 2.0),
            volume_action=_choice(env, "CONTRIBFLOW_VOLUME_ACTION", "warn", VOLUME_ACTIONS),
            late_deadline_s=_int(env, "CONTRIBFLOW_LATE_DEADLINE_S", 0),
            late_poll_s=_number(env, "CONTRIBFLOW_LATE_POLL_S", 30.0),
            completion=_choice(env, "CONTRIBFLOW_COMPLETION", "auto", COMPLETION_POLICIES),
            stable_s=_number(env, "CONTRIBFLOW_STABLE_S", 30.0),
            future_tolerance_days=_int(env, "CONTRIBFLOW_FUTURE_TOLERANCE_DAYS", 1),
            resent_file=_choice(env, "CONTRIBFLOW_RESENT_FILE", "warn", RESENT_FILE_POLICIES),
            sla_file_due_s=_optional_int(env, "CONTRIBFLOW_SLA_FILE_DUE_S"),
            sla_publish_deadline_s=_optional_int(env, "CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S"),
            sla_max_quarantine_ratio=_optional_number(env, "CONTRIBFLOW_SLA_MAX_QUARANTINE_RATIO"),
            workflow_namespace=_text(env, "CONTRIBFLOW_WORKFLOW_NAMESPACE", _LABEL, "a name (no control "
                                     "character, at most 253 characters)"),
            notify_webhook_url=_webhook_url(env),
            notify_format=_choice(env, "CONTRIBFLOW_NOTIFY_FORMAT", "generic", NOTIFY_FORMATS),
            notify_timeout_s=_number(env, "CONTRIBFLOW_NOTIFY_TIMEOUT_S", 10.0),
            argo_ui_url=(_url(env["CONTRIBFLOW_ARGO_UI_URL"], "CONTRIBFLOW_ARGO_UI_URL", secret=False).rstrip("/")
                         if env.get("CONTRIBFLOW_ARGO_UI_URL") else ""),
            request_ttl_hours=_int(env, "CONTRIBFLOW_REQUEST_TTL_HOURS", 72),
            git_revision=_text(env, "CONTRIBFLOW_GIT_REVISION", _REVISION, "a git revision (a commit hash or "
                               "`git describe` text: letters, digits, '.', '_', '+', '/', '-')") or "unknown",
            image_digests=_image_digests(env),
            signing_key_file=_path(env, "CONTRIBFLOW_SIGNING_KEY_FILE", None, "file"),
        )
        settings.check()
        return settings

    def check(self) -> None:
        """What no single variable's range says: how settings relate to each other."""
        if self.volume_min_history > self.volume_lookback_days:
            raise SettingsError(f"CONTRIBFLOW_VOLUME_MIN_HISTORY={self.volume_min_history} is more than "
                                f"CONTRIBFLOW_VOLUME_LOOKBACK_DAYS={self.volume_lookback_days}: the volume check "
                                "could never compare a day")
        if (self.sla_file_due_s is not None and self.sla_publish_deadline_s is not None
                and self.sla_publish_deadline_s < self.sla_file_due_s):
            raise SettingsError(f"CONTRIBFLOW_SLA_PUBLISH_DEADLINE_S={self.sla_publish_deadline_s} is before "
                                f"CONTRIBFLOW_SLA_FILE_DUE_S={self.sla_file_due_s}: the marts could never be "
                                "published from a file that arrived on time")

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
