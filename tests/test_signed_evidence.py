"""Signed evidence (issue 27, point 5): `contribflow audit --html FILE` writes FILE.sig, a DSSE envelope
signed with Ed25519; `contribflow verify-pack FILE` exits 0, or 1 if one byte of the pack or of its
signature changed, with a wrong key, without a .sig, or with a bad PEM, each with a clear message."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contribflow import cli
from contribflow.audit import signing
from contribflow.settings import Settings, SettingsError

ROOT = Path(__file__).resolve().parents[1]


def key_files(folder: Path, name: str = "key") -> tuple[Path, Path]:
    private = Ed25519PrivateKey.generate()
    priv, pub = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    priv.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    pub.write_bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv, pub


@pytest.fixture
def signed(tmp_path, monkeypatch):
    priv, pub = key_files(tmp_path)
    monkeypatch.setenv("CONTRIBFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CONTRIBFLOW_SIGNING_KEY_FILE", str(priv))
    pack = tmp_path / "pack.html"
    pack.write_bytes(b"<html><body>evidence: 1,234 rows loaded</body></html>\n")
    signing.sign(Settings.from_env(), pack, {"from": "2026-11-01", "to": "2026-11-02",
                                             "chain_head": {"seq": 7, "link": "ab" * 32}})
    return pack, pub




def test_a_signed_pack_verifies(signed, capsys):
    pack, pub = signed
    envelope = json.loads(signing.signature_path(pack).read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["subject"][0]["name"] == "pack.html"
    assert statement["predicate"]["dev_key"] is False and statement["predicate"]["chain_head"]["seq"] == 7
    assert cli.main(["verify-pack", str(pack), "--public-key", str(pub)]) == 0
    out = capsys.readouterr().out
    assert "is signed by key" in out and "DEV" not in out and "chain head seq 7" in out
    assert cli.main(["verify-pack", str(pack)]) == 0  # the installation's own key


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("offset", [0, 20, -2])
def test_one_byte_of_the_pack_changed_fails(signed, capsys, offset):
    pack, pub = signed
    _flip(pack, offset)
    assert cli.main(["verify-pack", str(pack), "--public-key", str(pub)]) == 1
    assert "the pack was changed after it was signed" in capsys.readouterr().err


def test_one_byte_of_the_signature_changed_fails(signed, capsys):
    pack, pub = signed
    sig = signing.signature_path(pack)
    envelope = json.loads(sig.read_text())
    raw = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    raw[5] ^= 0x01
    envelope["signatures"][0]["sig"] = base64.b64encode(bytes(raw)).decode()
    sig.write_text(json.dumps(envelope))
    assert cli.main(["verify-pack", str(pack), "--public-key", str(pub)]) == 1
    assert "the signature does not verify" in capsys.readouterr().err


def test_a_changed_statement_fails(signed, capsys):
    """Re-pointing the statement at the changed pack does not help: the signature covers the statement."""
    pack, pub = signed
    pack.write_bytes(pack.read_bytes().replace(b"1,234", b"9,234"))
    sig = signing.signature_path(pack)
    envelope = json.loads(sig.read_text())
    statement = json.loads(base64.b64decode(envelope["payload"]))

    statement["subject"][0]["digest"]["sha256"] = hashlib.sha256(pack.read_bytes()).hexdigest()
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    sig.write_text(json.dumps(envelope))
    assert cli.main(["verify-pack", str(pack), "--public-key", str(pub)]) == 1
    assert "the signature does not verify" in capsys.readouterr().err


def test_wrong_key_missing_signature_and_bad_pem_are_clear(signed, tmp_path, capsys):
    pack, _ = signed
    _, other = key_files(tmp_path, "other")
    assert cli.main(["verify-pack", str(pack), "--public-key", str(other)]) == 1
    assert "not by the key given" in capsys.readouterr().err
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot base64 at all\n-----END PUBLIC KEY-----\n")
    assert cli.main(["verify-pack", str(pack), "--public-key", str(bad)]) == 1
    assert "not a PEM public key" in capsys.readouterr().err
    rsa = tmp_path / "rsa.pem"
    from cryptography.hazmat.primitives.asymmetric import rsa as rsa_keys
    rsa.write_bytes(rsa_keys.generate_private_key(65537, 2048).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert cli.main(["verify-pack", str(pack), "--public-key", str(rsa)]) == 1
    assert "not an Ed25519 public key" in capsys.readouterr().err
    signing.signature_path(pack).unlink()
    assert cli.main(["verify-pack", str(pack), "--public-key", str(other)]) == 1
    assert "no signature next to the pack" in capsys.readouterr().err
    signing.signature_path(pack).write_text("{not json")
    assert cli.main(["verify-pack", str(pack), "--public-key", str(other)]) == 1
    assert "not a DSSE envelope" in capsys.readouterr().err


def test_the_dev_key_is_generated_once_and_marked(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CONTRIBFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("CONTRIBFLOW_SIGNING_KEY_FILE", raising=False)
    settings = Settings.from_env()
    pack = tmp_path / "p.html"
    pack.write_text("x")
    signing.sign(settings, pack, {"from": "2026-11-01", "to": "2026-11-01"})
    key = signing.dev_key_path(settings)
    assert key.name == "DEV-signing-key.pem" and stat.S_IMODE(key.stat().st_mode) == 0o600
    first = key.read_bytes()
    signing.sign(settings, pack, {"from": "2026-11-01", "to": "2026-11-01"})
    assert key.read_bytes() == first  # generated on first use only
    statement = json.loads(base64.b64decode(json.loads(signing.signature_path(pack).read_text())["payload"]))
    assert statement["predicate"]["dev_key"] is True and "DEV KEY" in statement["predicate"]["note"]
    assert cli.main(["verify-pack", str(pack)]) == 0
    assert "(a DEV key: not evidence)" in capsys.readouterr().out


def test_production_needs_a_real_key(tmp_path):
    env = {"CONTRIBFLOW_ENV": "production", "CONTRIBFLOW_STATE_DIR": str(tmp_path),
           "CONTRIBFLOW_PSEUDONYM_KEY": "k" * 40}
    with pytest.raises(SettingsError, match="CONTRIBFLOW_SIGNING_KEY_FILE is unset"):
        signing.signing_key(Settings.from_env(env))
    not_a_key = tmp_path / "k.pem"
    not_a_key.write_text("hello")
    with pytest.raises(SettingsError, match="not an unencrypted PEM private key"):
        signing.signing_key(Settings.from_env({**env, "CONTRIBFLOW_SIGNING_KEY_FILE": str(not_a_key)}))


@pytest.mark.integration
def test_the_evidence_pack_is_signed_and_embeds_the_chain_head_and_the_publications(database, sql, tmp_path):
    env = dict(os.environ)
    run = lambda *args: subprocess.run([sys.executable, "-m", "contribflow", *args], env=env, cwd=ROOT,  # noqa: E731
                                       capture_output=True, text=True, timeout=300)
    day = dt.date(2026, 11, 1)
    ran = run("run", "--date", day.isoformat(), "--rows", "200")
    assert ran.returncode == 0, ran.stderr
    pack = tmp_path / "pack.html"
    done = run("audit", "--from", day.isoformat(), "--to", day.isoformat(), "--html", str(pack))
    assert done.returncode == 0, done.stderr
    assert "signed -> " in done.stdout
    seq, link = sql("SELECT seq, encode(link, 'hex') FROM meta.audit_chain_head")[0]
    html = pack.read_text()
    assert f"seq {seq}</b>" in html and link in html
    statement = json.loads(base64.b64decode(json.loads(signing.signature_path(pack).read_text())["payload"]))
    assert statement["predicate"]["chain_head"] == {"seq": seq, "link": link}
    published = sql("SELECT p.id, o.table_name, o.row_count, o.content_hash FROM meta.publication p "
                    "JOIN meta.publication_output o ON o.publication_id = p.id ORDER BY p.id, o.table_name")
    assert len(published) == 2  # fct_contributions and dim_taxpayer of the day's one publication
    assert [(p["id"], p["table"], p["rows"], p["content_hash"]) for p in statement["predicate"]["publications"]] \
        == [tuple(r) for r in published]
    for _id, table, _rows, content_hash in published:
        assert table in html and content_hash in html
    assert run("verify-pack", str(pack)).returncode == 0
    pack.write_bytes(pack.read_bytes()[:-1] + b"!")
    failed = run("verify-pack", str(pack))
    assert failed.returncode == 1 and "changed after it was signed" in failed.stderr
