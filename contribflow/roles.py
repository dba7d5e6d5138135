"""Which database login each stage uses: its own role's, never another stage's.

Migration 0002 creates one NOLOGIN group role per kind of work (``contribflow_<role>``, roles as in
``k8s.DB_ROLES``). A stage's login is a member of its group role and connects with
``PGOPTIONS='-c role=contribflow_<role>'`` (libpq's own variable, so psycopg and dbt both honour it):
the session then acts as the group role, and every relation it creates is owned by the group role,
so any login of the same kind can replace it later.

Locally, ``contribflow run`` reads ``CONTRIBFLOW_DB_<ROLE>_USER`` / ``_PASSWORD`` and gives each stage
only its own role's pair, as the cluster gives each pod only its role's Secret keys.
"""

from __future__ import annotations

import re

from contribflow.cluster.k8s import DB_ROLES

GROUP_PREFIX = "contribflow_"
_LOGIN_VARS = re.compile(r"^CONTRIBFLOW_DB_[A-Z]+_(USER|PASSWORD)$")


def group_role(role: str) -> str:
    if role not in DB_ROLES:
        raise ValueError(f"unknown database role {role!r}; known: {', '.join(DB_ROLES)}")
    return GROUP_PREFIX + role


def login_vars(role: str) -> tuple[str, str]:
    name = role.upper()
    return f"CONTRIBFLOW_DB_{name}_USER", f"CONTRIBFLOW_DB_{name}_PASSWORD"


def stage_env(role: str, env: dict[str, str]) -> dict[str, str]:
    """``env`` for a stage that connects as ``role``: the other roles' logins removed, and this
    role's login (when configured) as PGUSER/PGPASSWORD acting as the group role."""
    user_var, password_var = login_vars(role)
    out = {k: v for k, v in env.items() if not _LOGIN_VARS.match(k)}
    user = env.get(user_var)
    if not user:
        return out
    out["PGUSER"] = user
    out.pop("PGPASSWORD", None)
    if env.get(password_var):
        out["PGPASSWORD"] = env[password_var]
    options = [o for o in [env.get("PGOPTIONS", "").strip()] if o]
    out["PGOPTIONS"] = " ".join([*options, f"-c role={group_role(role)}"])
    return out
