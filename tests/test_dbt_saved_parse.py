"""dbt's saved parse, shipped in the dbt image: an empty target folder (a new pod's emptyDir) seeded
from it does not parse the project again, wherever the warehouse is and whoever logs in
(contribflow/warehouse/transform.py). No database is needed: dbt parse never connects."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from contribflow.settings import Settings
from contribflow.warehouse import transform

from conftest import ROOT

POD_ENV = {"PGHOST": "warehouse.example.internal", "PGPORT": "6543", "PGUSER": "transformer-7f3a",
           "PGPASSWORD": "pod-password-not-in-any-file", "PGSSLMODE": "require", "PGDATABASE": "contribflow"}


def settings(target: Path, saved: Path | None = None) -> Settings:
    return Settings(dbt_project_dir=ROOT / "dbt", dbt_target_dir=target, dbt_saved_parse=saved,
                    state_dir=target.parent / "state")


@pytest.fixture
def shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The saved parse as the image's build makes it: no server, the build machine's own variables."""
    for name in ("PGPASSWORD", "PGUSER", "PGPORT", "PGSSLMODE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGHOST", "image-builder")
    monkeypatch.setenv("PGDATABASE", "contribflow")
    saved = transform.save_parse(settings(tmp_path / "image"))
    assert saved.name == "partial_parse.msgpack" and [p.name for p in saved.parent.iterdir()] == [saved.name]
    return saved


def parse_in_a_new_pod(tmp_path: Path, shipped: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> dict:
    for name, value in {**POD_ENV, **env}.items():
        monkeypatch.setenv(name, value)
    pod = tmp_path / "pod" / "dbt-target"
    assert not pod.exists()
    manifest = transform._parse(settings(pod, shipped))
    perf = json.loads((pod / "perf_info.json").read_text())
    return {"perf": perf, "manifest": manifest, "target": pod}


def test_an_empty_target_seeded_from_the_shipped_parse_does_not_parse_again(tmp_path, shipped, monkeypatch):
    seen = parse_in_a_new_pod(tmp_path, shipped, monkeypatch)
    assert seen["perf"]["path_count"] > 100
    assert seen["perf"]["parsed_path_count"] == 0, "every file came from the saved parse"
    models = [n for n in seen["manifest"].nodes.values() if n.resource_type == "model"]
    assert models and {m.database for m in models} == {"contribflow"}
    # The pod's own connection is back for the dbt commands that follow the parse.
    assert {k: os.environ.get(k) for k in POD_ENV} == POD_ENV
    # Neither the password nor where the warehouse is reaches the target folder's files.
    for path in seen["target"].rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"pod-password-not-in-any-file" not in data and b"warehouse.example" not in data, path


def test_without_the_shipped_parse_the_pod_parses_everything(tmp_path, monkeypatch):
    for name, value in POD_ENV.items():
        monkeypatch.setenv(name, value)
    pod = tmp_path / "pod"
    transform._parse(settings(pod, tmp_path / "no-such-file.msgpack"))
    perf = json.loads((pod / "perf_info.json").read_text())
    assert perf["parsed_path_count"] == perf["path_count"] > 100


def test_another_database_name_invalidates_the_shipped_parse(tmp_path, shipped, monkeypatch):
    """The parsed nodes name their database, so a deployment whose PGDATABASE is not the one the image
    was built for parses in full (and correctly) rather than use a wrong parse."""
    seen = parse_in_a_new_pod(tmp_path, shipped, monkeypatch, PGDATABASE="warehouse_eu")
    assert seen["perf"]["parsed_path_count"] == seen["perf"]["path_count"]
    assert {n.database for n in seen["manifest"].nodes.values() if n.resource_type == "model"} == {"warehouse_eu"}


def test_the_parse_placeholders_cover_every_connection_field_of_the_profile_but_the_database():
    profile = (ROOT / "dbt" / "profiles.yml").read_text()
    read = set(re.findall(r"env_var\('([A-Z_]+)'", profile))
    assert read - {"PGDATABASE"} == set(transform.PARSE_CONNECTION)
    assert transform.PARSE_CONNECTION["PGPASSWORD"] is None, "no password while parsing"
