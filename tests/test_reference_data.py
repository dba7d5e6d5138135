"""A fresh clone tests anywhere (issue 26): `make reference-data` puts the pinned schemas and CRDs in
.reference/, from ../shared when present, else from a mirror laid out as upstream, sha256-checked.

The mirrors here are built in tmp_path from the files the suite already reads (reference_dir), and
served by `python -m http.server` on 127.0.0.1 or as file:// URLs: no network beyond localhost."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from reference import REFERENCE, SETS, reference_dir

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "reference_data.py"
ENV_VARS = ("CONTRIBFLOW_SHARED_DIR", "CONTRIBFLOW_REFERENCE_MIRROR", "CONTRIBFLOW_REFERENCE_DIR")
DAMAGED = next(ref for ref in REFERENCE if ref.name == "argo-events-v1.9.11/crds/sensors.yaml")
MISSING = next(ref for ref in REFERENCE if ref.name == "argo-v4.1.2/crds/workflows.yaml")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def originals() -> dict:
    """Each pinned file's copy that the suite itself reads (../shared or .reference), by its RefFile."""
    return {ref: reference_dir(ref.set) / ref.file for ref in REFERENCE}


def build_mirror(root: Path, originals: dict) -> Path:
    """A mirror laid out as upstream: root/OWNER/REPO/TAG/PATH."""
    for ref, original in originals.items():
        target = root / ref.repo / ref.tag / ref.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(original, target)
    return root


def build_shared(root: Path, originals: dict) -> Path:
    """A ../shared laid out as the project machines': root/<set>/<file>."""
    for ref, original in originals.items():
        target = root / ref.set / ref.file
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(original, target)
    return root


@contextmanager
def http_server(directory: Path) -> Iterator[str]:
    """`python -m http.server` on a free 127.0.0.1 port serving directory; yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1",
                             "--directory", str(directory)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = proc.stdout.readline()  # "Serving HTTP on 127.0.0.1 port 41234 (http://127.0.0.1:41234/) ..."
        port = re.search(r" port (\d+)", line)
        assert port, f"http.server did not start: {line!r}"
        yield f"http://127.0.0.1:{port.group(1)}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(*args: str, env: dict[str, str] | None = None, make: bool = False) -> subprocess.CompletedProcess:
    """The script (or `make reference-data`) with only the given reference variables, and no proxy for localhost."""
    clean = {k: v for k, v in os.environ.items() if k not in ENV_VARS and k.lower() not in ("http_proxy", "https_proxy")}
    clean |= {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"} | (env or {})
    command = (["make", "--no-print-directory", "-C", str(ROOT), "reference-data"] if make
               else [sys.executable, str(SCRIPT), *args])
    return subprocess.run(command, env=clean, capture_output=True, text=True, timeout=120)


def assert_complete(dest: Path) -> None:
    for ref in REFERENCE:
        assert sha256(dest / ref.set / ref.file) == ref.sha256, ref.name
    assert not list(dest.rglob("*.part")), "a temporary file was left behind"


# --- the pinned list -----------------------------------------------------------------------------

def test_the_pinned_list_holds_every_file_the_tests_read_and_its_sums_are_those_of_the_files_read(originals):
    from argo_schema import CRD_FILES, SCHEMA_SET

    names = {ref.name for ref in REFERENCE}
    assert len(names) == len(REFERENCE), "a file is pinned twice"
    assert {f"{SCHEMA_SET}/schema.json"} | {f"{SCHEMA_SET}/crds/{f}" for f in CRD_FILES.values()} <= names
    assert {"argo-events-v1.9.11/schema.json", "prometheus-operator-v0.93.0/crds/prometheusrules.yaml",
            "prometheus-operator-v0.93.0/crds/servicemonitors.yaml"} <= names
    assert set(SETS) == {"argo-v4.1.2", "argo-events-v1.9.11", "prometheus-operator-v0.93.0"}
    for ref in REFERENCE:
        assert re.fullmatch(r"[0-9a-f]{64}", ref.sha256) and re.fullmatch(r"[\w.-]+/[\w.-]+", ref.repo)
        assert ref.tag.startswith("v") and ref.tag[1:] in ref.set, ref.name  # the set is named by its tag
        assert sha256(originals[ref]) == ref.sha256, ref.name


# --- (a) a mirror laid out as upstream, no ../shared ---------------------------------------------

def test_make_reference_data_fills_the_folder_from_an_http_mirror_and_does_not_fetch_again(originals, tmp_path):
    mirror = build_mirror(tmp_path / "mirror", originals)
    dest = tmp_path / "clone" / ".reference"
    env = {"CONTRIBFLOW_SHARED_DIR": str(tmp_path / "no-shared"), "CONTRIBFLOW_REFERENCE_DIR": str(dest)}
    with http_server(mirror) as url:
        done = run(make=True, env={**env, "CONTRIBFLOW_REFERENCE_MIRROR": url})
    assert done.returncode == 0, done.stdout + done.stderr
    assert_complete(dest)
    for name in SETS:
        count = sum(ref.set == name for ref in REFERENCE)
        assert f"reference-data: {name}: {count} downloaded, in {dest / name}" in done.stdout
    # the server is gone: files present and matching are not fetched again
    again = run(make=True, env={**env, "CONTRIBFLOW_REFERENCE_MIRROR": f"http://127.0.0.1:{closed_port()}"})
    assert again.returncode == 0, again.stdout + again.stderr
    assert "downloaded" not in again.stdout and again.stdout.count(" present, in ") == len(SETS)
    assert_complete(dest)


def test_a_file_url_mirror_works_too_and_readers_then_find_the_sets_there(originals, tmp_path, monkeypatch):
    mirror = build_mirror(tmp_path / "mirror", originals)
    dest = tmp_path / ".reference"
    done = run("--dest", str(dest), "--shared", str(tmp_path / "no-shared"), "--mirror", mirror.as_uri())
    assert done.returncode == 0, done.stderr
    assert_complete(dest)
    monkeypatch.setenv("CONTRIBFLOW_SHARED_DIR", str(tmp_path / "no-shared"))
    monkeypatch.setenv("CONTRIBFLOW_REFERENCE_DIR", str(dest))
    for name in SETS:
        assert reference_dir(name) == dest / name
    monkeypatch.delenv("ARGO_SCHEMA_DIR", raising=False)
    from argo_schema import ArgoSchema

    assert ArgoSchema().schema_dir == dest / "argo-v4.1.2"


# --- (b) one byte changed upstream ---------------------------------------------------------------

def test_a_file_with_one_byte_changed_is_refused_by_name_and_nothing_is_left_at_its_destination(originals, tmp_path):
    mirror = build_mirror(tmp_path / "mirror", originals)
    damaged = mirror / DAMAGED.repo / DAMAGED.tag / DAMAGED.path
    data = bytearray(damaged.read_bytes())
    data[len(data) // 2] ^= 0x01
    damaged.write_bytes(bytes(data))
    got = hashlib.sha256(bytes(data)).hexdigest()
    dest = tmp_path / ".reference"
    with http_server(mirror) as url:
        done = run("--dest", str(dest), "--shared", str(tmp_path / "no-shared"), "--mirror", url)
    assert done.returncode != 0
    [error] = [line for line in done.stderr.splitlines() if "error:" in line]
    assert DAMAGED.name in error and DAMAGED.set in error and DAMAGED.file in error
    assert f"expected {DAMAGED.sha256}, got {got}" in error
    assert f"{url}/{DAMAGED.repo}/{DAMAGED.tag}/{DAMAGED.path}" in error
    assert not (dest / DAMAGED.set / DAMAGED.file).exists()
    assert not list(dest.rglob("*.part")) and not list(dest.rglob(".*"))
    others = [ref for ref in REFERENCE if ref != DAMAGED]
    assert all(sha256(dest / ref.set / ref.file) == ref.sha256 for ref in others)


def test_a_damaged_copy_already_in_place_is_replaced_and_never_kept(originals, tmp_path):
    mirror = build_mirror(tmp_path / "mirror", originals)
    dest = tmp_path / ".reference"
    stale = dest / DAMAGED.set / DAMAGED.file
    stale.parent.mkdir(parents=True)
    stale.write_text("not the pinned file\n")
    done = run("--dest", str(dest), "--shared", str(tmp_path / "no-shared"), "--mirror", mirror.as_uri())
    assert done.returncode == 0, done.stderr
    assert_complete(dest)
    # and when the mirror's copy is damaged too, the stale copy is gone rather than kept
    stale.write_text("not the pinned file\n")
    (mirror / DAMAGED.repo / DAMAGED.tag / DAMAGED.path).write_text("also not it\n")
    refused = run("--dest", str(dest), "--shared", str(tmp_path / "no-shared"), "--mirror", mirror.as_uri())
    assert refused.returncode != 0 and DAMAGED.name in refused.stderr
    assert not stale.exists()


# --- (c) ../shared present: no network -----------------------------------------------------------

def test_shared_is_used_without_network(originals, tmp_path):
    shared = build_shared(tmp_path / "shared", originals)
    dest = tmp_path / ".reference"
    unreachable = f"http://127.0.0.1:{closed_port()}"
    done = run("--dest", str(dest), "--shared", str(shared), "--mirror", unreachable)
    assert done.returncode == 0, done.stderr
    assert_complete(dest)
    assert "downloaded" not in done.stdout and done.stdout.count(" copied, in ") == len(SETS)


def test_a_damaged_shared_copy_is_refused_not_replaced_from_the_network(originals, tmp_path):
    shared = build_shared(tmp_path / "shared", originals)
    edited = b"edited by hand\n"
    (shared / DAMAGED.set / DAMAGED.file).write_bytes(edited)
    mirror = build_mirror(tmp_path / "mirror", originals)  # a good copy is reachable, and still not used
    dest = tmp_path / ".reference"
    done = run("--dest", str(dest), "--shared", str(shared), "--mirror", mirror.as_uri())
    assert done.returncode != 0
    assert DAMAGED.name in done.stderr and str(shared / DAMAGED.set / DAMAGED.file) in done.stderr
    assert f"expected {DAMAGED.sha256}, got {hashlib.sha256(edited).hexdigest()}" in done.stderr
    assert not (dest / DAMAGED.set / DAMAGED.file).exists()


# --- (d) a file missing at the mirror ------------------------------------------------------------

def test_a_file_missing_at_the_mirror_is_a_clear_error_naming_its_url(originals, tmp_path):
    mirror = build_mirror(tmp_path / "mirror", originals)
    (mirror / MISSING.repo / MISSING.tag / MISSING.path).unlink()
    dest = tmp_path / ".reference"
    with http_server(mirror) as url:
        done = run("--dest", str(dest), "--shared", str(tmp_path / "no-shared"), "--mirror", url + "/")
    assert done.returncode != 0
    missing_url = f"{url}/{MISSING.repo}/{MISSING.tag}/{MISSING.path}"
    [error] = [line for line in done.stderr.splitlines() if "error:" in line]
    assert f"{MISSING.name}: cannot download {missing_url}: HTTP 404" in error
    assert f"{MISSING.set}: 3 downloaded, 1 FAILED" in done.stdout
    assert not (dest / MISSING.set / MISSING.file).exists() and not list(dest.rglob("*.part"))


def test_an_unsupported_mirror_scheme_is_refused(tmp_path):
    done = run("--dest", str(tmp_path / "d"), "--shared", str(tmp_path / "none"), "--mirror", "ftp://mirror.example",
               "--set", "prometheus-operator-v0.93.0")
    assert done.returncode != 0
    assert "CONTRIBFLOW_REFERENCE_MIRROR must be a file://, http:// or https:// URL" in done.stderr


# --- readers -------------------------------------------------------------------------------------

def test_reference_dir_prefers_shared_then_the_local_folder_else_says_to_run_make_reference_data(originals, tmp_path, monkeypatch):
    shared, local = tmp_path / "shared", tmp_path / ".reference"
    monkeypatch.setenv("CONTRIBFLOW_SHARED_DIR", str(shared))
    monkeypatch.setenv("CONTRIBFLOW_REFERENCE_DIR", str(local))
    with pytest.raises(FileNotFoundError, match="Run `make reference-data`"):
        reference_dir("argo-v4.1.2")
    build_shared(local, originals)
    assert reference_dir("argo-v4.1.2") == local / "argo-v4.1.2"
    build_shared(shared, originals)
    assert reference_dir("argo-v4.1.2") == shared / "argo-v4.1.2"
    (local / "prometheus-operator-v0.93.0" / "crds" / "servicemonitors.yaml").unlink()
    shutil.rmtree(shared / "prometheus-operator-v0.93.0")
    with pytest.raises(FileNotFoundError, match=r"servicemonitors\.yaml.*make reference-data"):
        reference_dir("prometheus-operator-v0.93.0")
    with pytest.raises(KeyError, match="no reference set"):
        reference_dir("argo-v9")


def test_make_test_fetches_the_reference_data_first_and_git_ignores_it():
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    def prerequisites(target: str) -> list[str]:
        return re.search(rf"^{target}: ([^#]*)##", makefile, re.M).group(1).split()

    assert "provision" in prerequisites("test") and "reference-data" in prerequisites("provision")
    assert "reference-data" in prerequisites("check")
    assert re.search(r"^reference-data:.*\n\t\$\(PYTHON\) scripts/reference_data\.py$", makefile, re.M)
    assert ".reference/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "make reference-data" in readme and "CONTRIBFLOW_REFERENCE_MIRROR" in readme
