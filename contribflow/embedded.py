"""An embedded PostgreSQL for laptops and tests (pgserver, PyPI), kept in a git-ignored folder.

It serves on a Unix socket inside its data folder, so nothing listens on the network.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

SELECTORS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE", "CONTRIBFLOW_DSN")


def _pgserver():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        import pgserver
    return pgserver


def bin_dir() -> Path:
    """The PostgreSQL client and server programs pgserver bundles (psql, pg_ctl, …)."""
    return Path(_pgserver().__file__).parent / "pginstall" / "bin"


def configured(env: dict[str, str] | None = None) -> bool:
    """True when the environment already selects a server (libpq variables or a DSN)."""
    source: Mapping[str, str] = os.environ if env is None else env
    return any(source.get(name) for name in SELECTORS)


def start(data_dir: Path) -> dict[str, str]:
    """Start (or reuse) the server in ``data_dir``; return the libpq variables that reach it."""
    try:
        pgserver = _pgserver()
    except ImportError:  # pragma: no cover - the dev extra installs it
        raise RuntimeError(
            "no database configured (PGHOST/CONTRIBFLOW_DSN unset) and pgserver is not installed: "
            "pip install 'contribflow[embedded]', or set the PG* variables"
        ) from None
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pgserver.get_server(data_dir, cleanup_mode=None)
    return {"PGHOST": str(data_dir), "PGUSER": "postgres", "PGDATABASE": "postgres"}


def stop(data_dir: Path) -> bool:
    """Stop the server in ``data_dir`` if one runs there."""
    data_dir = data_dir.resolve()
    if not (data_dir / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _pgserver().get_server(data_dir, cleanup_mode="stop").cleanup()
    return True


def psql_hint(env: dict[str, str]) -> str:
    return f"psql -h {env['PGHOST']} -U {env['PGUSER']} {env['PGDATABASE']}"
