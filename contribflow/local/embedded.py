"""An embedded PostgreSQL for laptops and tests (pgserver, PyPI), kept in a git-ignored folder.

It serves on a Unix socket inside its data folder, so nothing listens on the network.

After a crash (the postmaster killed, the laptop powered off) the data folder keeps a stale
``postmaster.pid``, which PostgreSQL (and pgserver, which then believes the server runs, the more
so when the dead postmaster lingers as a zombie) would not start over. ``start`` removes it when no
process of that server is left (each has the data folder as its working directory), and says in one
line what to do when one is. Starts are serialised by a lock file next to the data folder, so two
``contribflow run`` at once on the same folder start one server and both use it.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

SELECTORS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE", "CONTRIBFLOW_DSN")
STOP_WAIT_S = 60.0
LEFTOVER_WAIT_S = 10.0
"""How long the processes of a dead postmaster get to exit (they notice its death within a second)."""


def _pgserver():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on import
        import pgserver
    return pgserver


def bin_dir() -> Path:
    """The PostgreSQL client and server programs pgserver bundles (psql, pg_ctl, …)."""
    return Path(_pgserver().__file__).parent / "pginstall" / "bin"


def configured(env: Mapping[str, str] | None = None) -> bool:
    """True when the environment already selects a server (libpq variables or a DSN)."""
    source: Mapping[str, str] = os.environ if env is None else env
    return any(source.get(name) for name in SELECTORS)


@contextlib.contextmanager
def _exclusive(data_dir: Path) -> Iterator[None]:
    """One start at a time for this data folder (a lock file beside it, released if we die)."""
    with open(data_dir.parent / f".{data_dir.name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _alive(pid: int) -> bool:
    """A process that runs (a zombie, dead but not yet reaped, does not)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _attached(data_dir: Path) -> list[int]:
    """Live processes working in ``data_dir``: a postmaster's children all chdir there."""
    import psutil

    found = []
    for proc in psutil.process_iter(["pid", "status"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["status"] != psutil.STATUS_ZOMBIE and Path(proc.cwd()) == data_dir:
                found.append(proc.info["pid"])
    return found


def _clear_stale_pid(data_dir: Path) -> None:
    """Remove ``postmaster.pid`` (and the socket's lock file) left by a server that died, once no
    process of it is left; a postmaster that still runs is left alone."""
    pid_file = data_dir / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid = int(lines[0])
    except FileNotFoundError:
        return
    except (OSError, ValueError, IndexError):
        pid = 0  # an empty or cut pid file: from a crash during start-up
    if pid and _alive(pid):
        return
    deadline = time.monotonic() + LEFTOVER_WAIT_S
    while (left := _attached(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        raise RuntimeError(
            f"the embedded PostgreSQL in {data_dir} crashed (postmaster {pid or '?'} is gone) but its "
            f"process(es) {', '.join(map(str, left))} still run: stop them (kill {' '.join(map(str, left))}), "
            "then run again")
    socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].startswith("/") else data_dir
    port = lines[3].strip() if len(lines) > 3 and lines[3].strip().isdigit() else "5432"
    pid_file.unlink(missing_ok=True)
    (socket_dir / f".s.PGSQL.{port}.lock").unlink(missing_ok=True)


def _check_reachable(data_dir: Path) -> None:
    import psycopg

    try:
        psycopg.connect(host=str(data_dir), user="postgres", dbname="postgres", connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        raise RuntimeError(_cannot_start(data_dir, str(exc).strip().splitlines()[0])) from None


def _cannot_start(data_dir: Path, reason: str) -> str:
    return (f"the embedded PostgreSQL in {data_dir} is not answering ({reason}); its log: {data_dir}/log. "
            f"Run `contribflow db stop`, then run again; if it still fails, move {data_dir} away "
            "(a new, empty warehouse is created) or set PGHOST/CONTRIBFLOW_DSN to another server")


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
    quiet = logging.getLogger("pgserver")
    quiet.addHandler(logging.NullHandler())  # its errors repeat the whole server log on stderr
    quiet.propagate = False
    with _exclusive(data_dir):
        _clear_stale_pid(data_dir)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pgserver.get_server(data_dir, cleanup_mode=None)
        except Exception as exc:  # pg_ctl failed or timed out: one line, not pgserver's traceback
            raise RuntimeError(_cannot_start(data_dir, f"{type(exc).__name__}: {exc}".splitlines()[0])) from None
        _check_reachable(data_dir)
    return {"PGHOST": str(data_dir), "PGUSER": "postgres", "PGDATABASE": "postgres"}


def stop(data_dir: Path) -> bool:
    """Stop the server in ``data_dir`` if one runs there: a fast shutdown (SIGINT to its postmaster,
    what ``pg_ctl stop -m fast`` sends), waited for. Not through pgserver's handle: in the process
    that started the server that handle is the one made not to stop it (cleanup_mode None)."""
    data_dir = data_dir.resolve()
    if not (data_dir / "postmaster.pid").exists():
        return False
    with _exclusive(data_dir):
        _clear_stale_pid(data_dir)
        try:
            pid = int((data_dir / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return False  # it had crashed: nothing runs now
        os.kill(pid, signal.SIGINT)
        deadline = time.monotonic() + STOP_WAIT_S
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pid):
            raise RuntimeError(f"the embedded PostgreSQL in {data_dir} (postmaster {pid}) did not stop within "
                               f"{STOP_WAIT_S:g}s; its log: {data_dir}/log")
    _forget(data_dir)
    return True


def _forget(data_dir: Path) -> None:
    """Drop pgserver's handle of a server this process started (stale once it stopped), so that a
    later start() here starts it again, and its exit hook with it."""
    import atexit

    with contextlib.suppress(Exception):
        handle = _pgserver().postgres_server.PostgresServer._instances.pop(data_dir, None)
        if handle is not None:
            atexit.unregister(handle._cleanup)


def psql_hint(env: dict[str, str]) -> str:
    return f"psql -h {env['PGHOST']} -U {env['PGUSER']} {env['PGDATABASE']}"
