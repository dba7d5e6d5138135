"""Signed evidence (issue 27, point 5): a detached signature FILE.sig for an evidence pack, and its check.

FILE.sig is a DSSE envelope (https://github.com/secure-systems-lab/dsse, made and checked with
securesystemslib, the library the DSSE and in-toto projects maintain) whose payload is an in-toto
Statement v1: its subject is the pack (file name and sha256 of its exact bytes), its predicate what the
pack attests (the period, the audit chain's head, whether the key is a dev key). The signature is
Ed25519 (``cryptography``) over DSSE's pre-authentication encoding of the payload; its keyid is the
key's fingerprint, the sha256 of its public key (DER SubjectPublicKeyInfo), in hex.

The private key is a PEM (PKCS#8, unencrypted: `openssl genpkey -algorithm ed25519`) in the file
CONTRIBFLOW_SIGNING_KEY_FILE names, in the cluster a Kubernetes Secret mounted as a file. When that
is unset outside production, a dev key is generated on first use in the local state folder
(``<state dir>/signing/DEV-signing-key.pem``) and every signature it makes says ``"dev_key": true``:
it proves nothing to an auditor (anyone with the laptop has it), only that the mechanism works.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from contribflow.errors import StageError
from contribflow.settings import Settings, SettingsError

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://contribflow.dev/evidence-pack/v1"
DEV_KEY_NAME = "DEV-signing-key.pem"
DEV_NOTE = "DEV KEY: generated locally, not evidence (docs/verify.md)"


class SignatureInvalid(StageError):
    """The pack, its signature or the key do not match (exit 1)."""


def signature_path(pack: Path) -> Path:
    return pack.with_name(pack.name + ".sig")


def fingerprint(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def _load_private(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise SettingsError(f"signing key {path}: cannot be read ({exc.strerror})") from None
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"signing key {path}: not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SettingsError(f"signing key {path}: a {type(key).__name__}, not Ed25519 "
                            "(openssl genpkey -algorithm ed25519)")
    return key


def dev_key_path(settings: Settings) -> Path:
    return settings.state_dir / "signing" / DEV_KEY_NAME


def signing_key(settings: Settings) -> tuple[Any, bool]:
    """(the Ed25519 private key, whether it is the local dev key)."""
    if settings.signing_key_file is not None:
        return _load_private(settings.signing_key_file), False
    if settings.environment == "production":
        raise SettingsError("CONTRIBFLOW_ENV=production but CONTRIBFLOW_SIGNING_KEY_FILE is unset: an evidence "
                            "pack is not signed with a dev key (docs/runbook.md, signing key)")
    path = dev_key_path(settings)
    if not path.exists():
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        path.parent.mkdir(parents=True, exist_ok=True)
        pem = Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        (path.parent / "README.txt").write_text(
            f"{DEV_KEY_NAME}: a {DEV_NOTE}.\nSet CONTRIBFLOW_SIGNING_KEY_FILE to the real key's file.\n")
    return _load_private(path), True


def sign(settings: Settings, pack: Path, predicate: dict[str, Any]) -> Path:
    """Write pack.sig, the DSSE envelope of an in-toto statement about ``pack``'s exact bytes."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.signer import CryptoSigner, SSlibKey

    private, dev = signing_key(settings)
    public = private.public_key()
    keyid = fingerprint(public)
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": pack.name, "digest": {"sha256": hashlib.sha256(pack.read_bytes()).hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {**predicate, "dev_key": dev, **({"note": DEV_NOTE} if dev else {})},
    }
    envelope = Envelope(json.dumps(statement, sort_keys=True).encode(), PAYLOAD_TYPE, {})
    envelope.sign(CryptoSigner(private, SSlibKey.from_crypto(public, keyid=keyid)))
    out = signature_path(pack)
    out.write_text(json.dumps(envelope.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _load_public(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SignatureInvalid(f"--public-key {path}: cannot be read ({exc.strerror})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureInvalid(f"--public-key {path}: not a PEM public key (SubjectPublicKeyInfo, "
                               f"'-----BEGIN PUBLIC KEY-----'): {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureInvalid(f"--public-key {path}: a {type(key).__name__}, not an Ed25519 public key")
    return key


@dataclass(frozen=True)
class Checked:
    keyid: str
    dev_key: bool
    statement: dict[str, Any]


def verify(pack: Path, public_key: Any) -> Checked:
    """Check pack.sig against the pack's bytes and ``public_key``; raise SignatureInvalid otherwise."""
    from securesystemslib.dsse import Envelope
    from securesystemslib.exceptions import VerificationError
    from securesystemslib.signer import SSlibKey

    sig = signature_path(pack)
    try:
        data = pack.read_bytes()
    except OSError as exc:
        raise SignatureInvalid(f"{pack}: cannot be read ({exc.strerror})") from None
    try:
        raw = sig.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SignatureInvalid(f"{sig}: no signature next to the pack (audit --html writes FILE.sig)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SignatureInvalid(f"{sig}: cannot be read ({exc})") from None
    try:
        envelope = Envelope.from_dict(json.loads(raw))
        statement = json.loads(envelope.payload)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SignatureInvalid(f"{sig}: not a DSSE envelope of a JSON statement ({type(exc).__name__}: "
                               f"{exc})") from None
    keyid = fingerprint(public_key)
    if envelope.payload_type != PAYLOAD_TYPE:
        raise SignatureInvalid(f"{sig}: payloadType {envelope.payload_type!r}, expected {PAYLOAD_TYPE!r}")
    signers = sorted(envelope.signatures)
    if keyid not in envelope.signatures:
        raise SignatureInvalid(f"{sig}: signed by key {', '.join(signers) or '(none)'}, not by the key given "
                               f"({keyid})")
    try:
        envelope.verify([SSlibKey.from_crypto(public_key, keyid=keyid)], 1)
    except VerificationError:
        raise SignatureInvalid(f"{sig}: the signature does not verify with key {keyid}: the signature or its "
                               "statement was changed") from None
    digest = hashlib.sha256(data).hexdigest()
    subjects = statement.get("subject") if isinstance(statement, dict) else None
    names = [s.get("digest", {}).get("sha256") for s in subjects or [] if isinstance(s, dict)]
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise SignatureInvalid(f"{sig}: the statement is not an evidence-pack statement ({PREDICATE_TYPE})")
    if digest not in names:
        raise SignatureInvalid(f"{pack}: its sha256 {digest} is not the one signed ({', '.join(map(str, names))}): "
                               "the pack was changed after it was signed")
    return Checked(keyid, bool(statement.get("predicate", {}).get("dev_key")), statement)


def configured_public_key(settings: Settings) -> Any:
    """The public half of this installation's signing key (the dev key only if it exists already)."""
    if settings.signing_key_file is None and not dev_key_path(settings).exists():
        raise SignatureInvalid("no --public-key given and no signing key here (CONTRIBFLOW_SIGNING_KEY_FILE unset, "
                               f"no dev key at {dev_key_path(settings)}): give the signer's public key")
    return signing_key(settings)[0].public_key()


def verify_file(pack: Path, public_key_file: Path | None, settings: Settings | None = None) -> str:
    key = _load_public(public_key_file) if public_key_file else configured_public_key(settings or Settings.from_env())
    checked = verify(pack, key)
    pred = checked.statement.get("predicate", {})
    head = pred.get("chain_head") or {}
    return (f"verify-pack: {pack} is signed by key {checked.keyid}"
            + (" (a DEV key: not evidence)" if checked.dev_key else "")
            + f"; period {pred.get('from')}..{pred.get('to')}, audit chain head seq {head.get('seq')}")
