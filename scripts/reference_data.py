#!/usr/bin/env python3
"""The reference data the tests and tools validate against (upstream schemas and CRDs), pinned by sha256.

`make reference-data` runs this script. For every file of REFERENCE it puts a copy checked against its
sha256 at ``<dest>/<set>/<file>`` (default dest: ``.reference/`` in the clone, git-ignored), the same
layout as the project machines' ``../shared/<set>/<file>``, so code may read either. Each file comes

- from ``$CONTRIBFLOW_SHARED_DIR/<set>/<file>`` (default ``../shared`` beside the clone) when it is there,
  without any network;
- otherwise from ``$CONTRIBFLOW_REFERENCE_MIRROR/OWNER/REPO/TAG/PATH``, by default
  ``https://raw.githubusercontent.com`` (an air-gapped site points it at an internal mirror laid out
  the same way: ``https://…``, ``http://…`` or ``file:///…``).

A file whose sha256 is not the pinned one is refused: the error names the set, the file, the expected
and the actual sum, and nothing is left at its destination (each copy is written to a temporary file
in the destination folder, checked, then renamed). Files already present with the right sum are not
fetched again. Standard library only, so it runs before (and without) the project's virtualenv.

Readers find a set with ``reference_dir(name)`` (tests/reference.py re-exports it): ``../shared/<set>``
when present, else the materialised ``.reference/<set>``.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MIRROR = "https://raw.githubusercontent.com"
MIRROR_ENV = "CONTRIBFLOW_REFERENCE_MIRROR"
SHARED_ENV = "CONTRIBFLOW_SHARED_DIR"
DEST_ENV = "CONTRIBFLOW_REFERENCE_DIR"
SCHEMES = ("file", "http", "https")
TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class RefFile:
    set: str  # the folder under ../shared and .reference, e.g. argo-v4.1.2
    file: str  # the path inside that folder, e.g. crds/workflows.yaml
    repo: str  # upstream OWNER/REPO on GitHub
    tag: str  # upstream tag
    path: str  # the path inside the upstream repository at that tag
    sha256: str

    @property
    def name(self) -> str:
        return f"{self.set}/{self.file}"

    def url(self, mirror: str) -> str:
        return f"{mirror.rstrip('/')}/{self.repo}/{self.tag}/{self.path}"


def _set(name: str, repo: str, tag: str, files: Iterable[tuple[str, str, str]]) -> list[RefFile]:
    return [RefFile(name, file, repo, tag, path, sha) for file, path, sha in files]


# The pinned list: one row per file (file in the set, upstream path, sha256). The sums are those of the
# copies in ../shared the tests were written against (see each set's README.md there).
REFERENCE: tuple[RefFile, ...] = (
    # Argo Workflows v4.1.2: the JSON schema and the full CRDs (tests/argo_schema.py, lint-chart).
    *_set("argo-v4.1.2", "argoproj/argo-workflows", "v4.1.2", [
        ("schema.json", "api/jsonschema/schema.json",
         "3f84c5722c48a5aa815fe69119a9375fc3635114f8046da20ede55a8596529f5"),
        ("crds/cronworkflows.yaml", "manifests/base/crds/full/argoproj.io_cronworkflows.yaml",
         "31abde1c89c6c11cf1c97753676327e02b2f8dc47827e49383732ac6b1d828c6"),
        ("crds/workflows.yaml", "manifests/base/crds/full/argoproj.io_workflows.yaml",
         "35ffc0d16c9c71db69ae113e562d90057eac75a60e7371aa3012a3171ccd8c39"),
        ("crds/workflowtemplates.yaml", "manifests/base/crds/full/argoproj.io_workflowtemplates.yaml",
         "e932631a04a0f3a226b2ca8c68d43214c071c5d8aa6961b23298b81cbea3d9a5"),
    ]),
    # Argo Events v1.9.11: the JSON schema (the only machine check of a Sensor/EventSource) and the CRDs.
    *_set("argo-events-v1.9.11", "argoproj/argo-events", "v1.9.11", [
        ("schema.json", "api/jsonschema/schema.json",
         "0eb4360bf0c41ab6af09f163f4273e4cca7d61663d0abbe75c79017ca2eb6bee"),
        ("crds/eventbus.yaml", "manifests/base/crds/argoproj.io_eventbus.yaml",
         "1c0ac46b9485245f46cfe13db6a2d9fdeff423bb67e7616c84202b005e62ad68"),
        ("crds/eventsources.yaml", "manifests/base/crds/argoproj.io_eventsources.yaml",
         "c90508bd9c1fceb5963a22830d819005ff5a3a9242d72ba208d8b2739ee50fda"),
        ("crds/sensors.yaml", "manifests/base/crds/argoproj.io_sensors.yaml",
         "ef42b0baa06d95a83077f5eef92a0ef8c1dc4f2119e388dd5076d512f60bbe4b"),
    ]),
    # prometheus-operator v0.93.0: the PrometheusRule and ServiceMonitor CRDs.
    *_set("prometheus-operator-v0.93.0", "prometheus-operator/prometheus-operator", "v0.93.0", [
        ("crds/prometheusrules.yaml", "example/prometheus-operator-crd-full/monitoring.coreos.com_prometheusrules.yaml",
         "78be98554b9c8506ab2b4f4feb91c5f3a56e536a0a510f3a8e876a459970d56d"),
        ("crds/servicemonitors.yaml", "example/prometheus-operator-crd-full/monitoring.coreos.com_servicemonitors.yaml",
         "a99047972c9dd7679ce2050b9968e8a08773492e671b3e17abd476d42aa78a32"),
    ]),
)
SETS: tuple[str, ...] = tuple(dict.fromkeys(ref.set for ref in REFERENCE))


class ReferenceDataError(Exception):
    """A reference file could not be put in place; the message says which and why."""


# --- where the data is -----------------------------------------------------------------------------

def shared_dir() -> Path:
    """The project machines' folder of sets: $CONTRIBFLOW_SHARED_DIR, else ../shared beside the clone."""
    return Path(os.environ.get(SHARED_ENV) or ROOT.parent / "shared")


def local_dir() -> Path:
    """Where `make reference-data` puts the sets: $CONTRIBFLOW_REFERENCE_DIR, else .reference/ in the clone."""
    return Path(os.environ.get(DEST_ENV) or ROOT / ".reference")


def files_of(name: str) -> list[RefFile]:
    found = [ref for ref in REFERENCE if ref.set == name]
    if not found:
        raise KeyError(f"no reference set {name!r} (known: {', '.join(SETS)}; see scripts/reference_data.py)")
    return found


def reference_dir(name: str) -> Path:
    """The folder of the reference set `name`: ../shared/<set> when present, else .reference/<set>.

    Raises FileNotFoundError naming `make reference-data` when neither holds every file of the set."""
    files = files_of(name)
    candidates = [shared_dir() / name, local_dir() / name]
    for folder in candidates:
        if folder.is_dir():
            missing = [ref.file for ref in files if not (folder / ref.file).is_file()]
            if not missing:
                return folder
    looked = " nor ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"reference data {name!r} not found: neither {looked} holds all of {', '.join(r.file for r in files)}. "
        f"Run `make reference-data` (it copies them from ../shared or downloads them, sha256-checked, "
        f"from ${MIRROR_ENV}, default {DEFAULT_MIRROR}).")


# --- putting it in place ---------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _open_source(ref: RefFile, shared: Path, mirror: str):
    """(a binary stream, a description of where it comes from) for one file."""
    local = shared / ref.set / ref.file
    if local.is_file():
        return local.open("rb"), str(local)
    url = ref.url(mirror)
    scheme = url.split(":", 1)[0].lower()
    if scheme not in SCHEMES:
        raise ReferenceDataError(f"{ref.name}: {MIRROR_ENV} must be a file://, http:// or https:// URL, "
                                 f"not {mirror!r}")
    try:
        return urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS), url
    except urllib.error.HTTPError as error:
        raise ReferenceDataError(f"{ref.name}: cannot download {url}: HTTP {error.code} {error.reason}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ReferenceDataError(f"{ref.name}: cannot download {url}: {reason}") from None


def fetch(ref: RefFile, dest: Path, shared: Path, mirror: str) -> str:
    """Put one file at dest/<set>/<file>, checked: "present" (already there), "copied" or "downloaded"."""
    target = dest / ref.set / ref.file
    if target.is_file():
        if sha256_of(target) == ref.sha256:
            return "present"
        target.unlink()  # a stale or damaged copy: never left in place
    target.parent.mkdir(parents=True, exist_ok=True)
    source, origin = _open_source(ref, shared, mirror)
    digest = hashlib.sha256()
    tmp = tempfile.NamedTemporaryFile(dir=target.parent, prefix=f".{target.name}.", suffix=".part", delete=False)
    try:
        with source, tmp:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                tmp.write(block)
        got = digest.hexdigest()
        if got != ref.sha256:
            raise ReferenceDataError(
                f"{ref.name}: sha256 mismatch for {ref.file} of set {ref.set} from {origin}: "
                f"expected {ref.sha256}, got {got}; refused, nothing written to {target}")
        os.chmod(tmp.name, 0o644)
        os.replace(tmp.name, target)
    except BaseException as error:
        Path(tmp.name).unlink(missing_ok=True)
        if isinstance(error, (OSError, http.client.HTTPException)):  # a read cut short, a full disk
            raise ReferenceDataError(f"{ref.name}: reading {origin} or writing {target} failed: {error}") from None
        raise
    return "copied" if origin == str(shared / ref.set / ref.file) else "downloaded"


def materialise(dest: Path, shared: Path, mirror: str, sets: Sequence[str] = SETS) -> list[str]:
    """Every file of `sets` into dest, one summary line per set on stdout; returns the errors, [] when
    every file is in place."""
    errors = []
    for name in sets:
        files = files_of(name)
        done = {"present": 0, "copied": 0, "downloaded": 0}
        for ref in files:
            try:
                done[fetch(ref, dest, shared, mirror)] += 1
            except ReferenceDataError as error:
                errors.append(str(error))
        failed = len(files) - sum(done.values())
        summary = ", ".join(f"{count} {what}" for what, count in done.items() if count)
        where = f"{failed} FAILED" if failed else f"in {dest / name}"
        print(f"reference-data: {name}: {summary or 'none in place'}, {where}", flush=True)
    return errors


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, default=None,
                        help=f"where the sets go (default ${DEST_ENV}, else .reference/ in the clone)")
    parser.add_argument("--shared", type=Path, default=None,
                        help=f"the folder of sets to copy from first (default ${SHARED_ENV}, else ../shared)")
    parser.add_argument("--mirror", default=None,
                        help=f"base URL laid out as OWNER/REPO/TAG/PATH (default ${MIRROR_ENV}, else {DEFAULT_MIRROR})")
    parser.add_argument("--set", dest="sets", action="append", choices=SETS,
                        help="only this set (repeatable; default every set)")
    args = parser.parse_args(argv)
    dest = args.dest or local_dir()
    shared = args.shared or shared_dir()
    mirror = args.mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    errors = materialise(dest, shared, mirror, args.sets or SETS)
    for error in errors:
        print(f"reference-data: error: {error}", file=sys.stderr)
    if errors:
        print(f"reference-data: {len(errors)} file(s) not in place; nothing unchecked was kept", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
