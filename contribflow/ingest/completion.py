"""When a source file is complete: the source's own signal, else a stability window watched by pick.

Sources write their export in place, so a file that is there may still be growing. What real
sources send, in the landing folder next to ``contributions_YYYYMMDD.csv``:

- a **manifest** ``contributions_YYYYMMDD.csv.manifest.json``, written after the data file::

      {"file": "contributions_20261101.csv", "rows": 30000, "sha256": "<64 lowercase hex>",
       "size_bytes": 2417771}

  ``file``, ``rows`` (data records after the header; blank lines are not records) and ``sha256``
  (of the file's bytes) are required, ``size_bytes`` optional, other keys ignored. JSON because it
  is typed (a count is a number, not text to re-parse), every export tool writes it, and it names
  its file (a manifest copied next to another file is caught); a ``sha256sum`` line has no row
  count. The manifest is the file's content check: ingest verifies sha256 (and size) against its
  own fingerprint and the row count against the records it read; any difference refuses the file.
- a **control file** ``contributions_YYYYMMDD.csv.done`` or ``.ok``, possibly empty (its content is
  not read), written after the data file: it must not be older than the data file (one older than
  the data was written before the data last changed, and says nothing about the new content).

``CONTRIBFLOW_COMPLETION`` says which to trust: ``auto`` (a manifest, else a control file, when
there is one; else the stability window), ``manifest``, ``control`` (that signal only: without it
the file is not complete), or ``stable`` (signals ignored, the window only). The **stability
window**: pick watches the file's size, mtime, ctime and inode and hands it on only when none
changed for ``CONTRIBFLOW_STABLE_S`` seconds (ctime cannot be set back by a writer that preserves
mtimes; on NFS/EFS, keep the window above the client's attribute cache time, acregmax, 60 s by
default). A file not complete yet is waited for exactly as a late file (pick.py).

Ingest does not trust pick blindly (the file may change between their pods): it re-checks the
signal, verifies the manifest, and refuses to commit what it read if the file's signature changed
from before its fingerprint to the end of its read (``FileChanged``, exit 75, retried).
"""

from __future__ import annotations

import json
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from contribflow.errors import FileChanged
from contribflow.settings import Settings

CONTROL_SUFFIXES = (".done", ".ok")
MANIFEST_SUFFIX = ".manifest.json"
MAX_MANIFEST_BYTES = 64 << 10
_SHA256 = re.compile(r"[0-9a-f]{64}")
WATCH_TICK_S = 1.0
"""How often pick looks at a file inside its stability window (and for a signal arriving meanwhile)."""


class ManifestNotReady(ValueError):
    """The manifest cannot be read as JSON (yet): it may still be being written."""


class ManifestInvalid(ValueError):
    """The manifest is JSON but not a manifest of this file: the file is refused."""


@dataclass(frozen=True)
class Signature:
    """What changes whenever a file's bytes do (or the file is replaced by another)."""

    device: int
    inode: int
    size: int
    mtime_ns: int
    ctime_ns: int

    @classmethod
    def of(cls, path: Path) -> Signature:
        st = os.stat(path, follow_symlinks=False)
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def change_from(self, before: Signature) -> str:
        """How the file changed since ``before``, in words."""
        if (self.device, self.inode) != (before.device, before.inode):
            return "it was replaced by another file"
        if self.size != before.size:
            return f"its size went from {before.size} to {self.size} bytes"
        return "it was written to (mtime/ctime changed)"


@dataclass(frozen=True)
class Manifest:
    path: Path
    file: str
    rows: int
    sha256: str
    size_bytes: int | None = None

    def content_problem(self, data_name: str, sha256: str, size_bytes: int) -> str | None:
        """Why the file's bytes are not those the manifest describes (None: they are)."""
        if self.size_bytes is not None and self.size_bytes != size_bytes:
            return (f"{data_name} does not match its manifest {self.path.name}: {size_bytes} bytes, the "
                    f"manifest says {self.size_bytes} (sha256 {sha256[:12]}…, the manifest's {self.sha256[:12]}…)")
        if self.sha256 != sha256:
            return (f"{data_name} does not match its manifest {self.path.name}: sha256 {sha256[:12]}… "
                    f"({size_bytes} bytes), the manifest says {self.sha256[:12]}…")
        return None

    def rows_problem(self, data_name: str, rows: int) -> str | None:
        if rows != self.rows:
            return (f"{data_name} does not match its manifest {self.path.name}: {rows} data rows read, "
                    f"the manifest says {self.rows}")
        return None


def manifest_path(data: Path) -> Path:
    return data.with_name(data.name + MANIFEST_SUFFIX)


def control_paths(data: Path) -> list[Path]:
    return [data.with_name(data.name + suffix) for suffix in CONTROL_SUFFIXES]


def read_manifest(path: Path, data_name: str) -> Manifest:
    """The manifest at ``path`` for the data file ``data_name``; ManifestNotReady when it is not
    (yet) readable JSON, ManifestInvalid when it is JSON that is not this file's manifest."""
    try:
        st = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(st.st_mode):
            raise ManifestInvalid(f"manifest {path.name} is not a regular file")
        if st.st_size > MAX_MANIFEST_BYTES:
            raise ManifestInvalid(f"manifest {path.name} has {st.st_size} bytes (at most {MAX_MANIFEST_BYTES})")
        text = path.read_bytes().decode("utf-8")
        data = json.loads(text)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestNotReady(f"manifest {path.name} is not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ManifestInvalid(f"manifest {path.name} is not a JSON object")
    problems = []
    if data.get("file") != data_name:
        problems.append(f"\"file\" must be {data_name!r} (got {data.get('file')!r})")
    rows = data.get("rows")
    if type(rows) is not int or rows < 0:
        problems.append(f"\"rows\" must be a whole number >= 0 (got {rows!r})")
    sha = data.get("sha256")
    if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
        problems.append(f"\"sha256\" must be 64 lowercase hex characters (got {str(sha)[:80]!r})")
    size = data.get("size_bytes")
    if size is not None and (type(size) is not int or size < 0):
        problems.append(f"\"size_bytes\" must be a whole number >= 0 (got {size!r})")
    if problems:
        raise ManifestInvalid(f"manifest {path.name} is not a manifest of {data_name}: {'; '.join(problems)}")
    return Manifest(path, data_name, rows, sha, size)  # type: ignore[arg-type]


def write_manifest(data: Path, rows: int, sha256: str, size_bytes: int) -> Path:
    """Write ``data``'s manifest atomically (what a well-behaved source does, after the data file)."""
    target = manifest_path(data)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    body = {"file": data.name, "rows": rows, "sha256": sha256, "size_bytes": size_bytes}
    try:
        tmp.write_text(json.dumps(body, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


@dataclass(frozen=True)
class Verdict:
    complete: bool
    how: str = ""
    """What said it is complete: manifest, control or stable."""
    reason: str = ""
    """Why it is not complete yet."""
    watched_s: float = 0.0
    """Seconds pick spent watching the file for this verdict."""


def _is_file(path: Path) -> os.stat_result | None:
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return None
    return st if stat.S_ISREG(st.st_mode) else None


def _signals(settings: Settings, data: Path) -> Verdict | None:
    """What the source's own signals say under the policy; None when the stability window decides."""
    policy = settings.completion
    if policy == "stable":
        return None
    try:
        data_mtime = os.stat(data, follow_symlinks=False).st_mtime_ns
    except FileNotFoundError:
        return Verdict(False, reason="it disappeared")
    if policy in ("auto", "manifest"):
        manifest = manifest_path(data)
        if _is_file(manifest) is not None:
            try:
                read_manifest(manifest, data.name)
            except ManifestNotReady as exc:
                return Verdict(False, reason=str(exc))
            except ManifestInvalid:
                pass  # ingest refuses the file, naming the manifest and what is wrong
            return Verdict(True, "manifest")
        if policy == "manifest":
            return Verdict(False, reason=f"no manifest {manifest.name} yet (CONTRIBFLOW_COMPLETION=manifest)")
    if policy in ("auto", "control"):
        found = [(p, st) for p in control_paths(data) if (st := _is_file(p)) is not None]
        fresh = [p for p, st in found if st.st_mtime_ns >= data_mtime]
        if fresh:
            return Verdict(True, "control")
        if found:
            return Verdict(False, reason=f"its control file {found[0][0].name} is older than the data file "
                                         "(the data changed after it was written): waiting for a new one")
        if policy == "control":
            names = " or ".join(p.name for p in control_paths(data))
            return Verdict(False, reason=f"no control file {names} yet (CONTRIBFLOW_COMPLETION=control)")
    return None


def assess(settings: Settings, data: Path) -> Verdict:
    """Is ``data`` (a regular file that is there) complete? Under the stability window this watches it
    for up to ``CONTRIBFLOW_STABLE_S`` seconds, returning as soon as it changes (or, under ``auto``,
    as soon as a control file or manifest appears)."""
    verdict = _signals(settings, data)
    if verdict is not None:
        return verdict
    started = time.monotonic()
    try:
        first = Signature.of(data)
    except FileNotFoundError:
        return Verdict(False, reason="it disappeared")
    while (watched := time.monotonic() - started) < settings.stable_s:
        time.sleep(min(WATCH_TICK_S, settings.stable_s - watched))
        try:
            now = Signature.of(data)
        except FileNotFoundError:
            return Verdict(False, reason="it disappeared while pick watched it", watched_s=time.monotonic() - started)
        if now != first:
            return Verdict(False, reason=f"it is still being written: {now.change_from(first)} within "
                                         f"{time.monotonic() - started:.0f}s (CONTRIBFLOW_STABLE_S="
                                         f"{settings.stable_s:g})", watched_s=time.monotonic() - started)
        if (signalled := _signals(settings, data)) is not None:
            return Verdict(signalled.complete, signalled.how, signalled.reason, time.monotonic() - started)
    return Verdict(True, "stable", watched_s=time.monotonic() - started)


def for_ingest(settings: Settings, data: Path) -> Manifest | None:
    """Ingest's own look at the signal pick relied on (no waiting): the manifest to verify, if any.
    A signal the policy needs that is missing, stale or unreadable now means the file changed after
    pick: FileChanged (exit 75, retried). An invalid manifest raises ManifestInvalid."""
    if settings.completion == "stable":
        return None
    verdict = _signals(settings, data)
    if verdict is not None and not verdict.complete:
        raise FileChanged(f"{data.name} is not complete any more: {verdict.reason}; retried")
    if verdict is not None and verdict.how == "manifest":
        try:
            return read_manifest(manifest_path(data), data.name)
        except ManifestNotReady as exc:
            raise FileChanged(f"{data.name}: {exc}; retried") from None
    return None


def unchanged(data: Path, before: Signature, during: str) -> None:
    """FileChanged unless ``data`` still has the signature it had ``before``."""
    try:
        now = Signature.of(data)
    except FileNotFoundError:
        raise FileChanged(f"{data.name} disappeared {during}; nothing of it is committed, retried") from None
    if now != before:
        raise FileChanged(f"{data.name} changed {during} ({now.change_from(before)}); nothing of it is "
                          "committed, retried once it is complete")
