"""Signing keys and trusted public keys (Ed25519, the ``cryptography`` package).

The signing key comes from ``integrity.signing_key_file`` or ``integrity.signing_key`` (PKCS#8 PEM, or
base64 of the 32-byte seed); in development, when neither is set, a key is created once in
``integrity.dev_key_file`` (mode 0600). Production refuses to start without one while sealing is enabled
(settings). Key material is never logged or printed; only public keys and key ids are.

Trusted keys for verification: the current key's public half (when the private key is readable here) and
every entry of ``integrity.public_keys`` (rotated-out keys, or the current one on machines that only
verify). Rotation: put the old public key into ``public_keys``, then switch the signing key; old digests
stay verifiable, new ones carry the new ``key_id``.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from schemas.digests_v1 import key_id_of
from services.common.settings import Settings


class IntegrityKeyError(Exception):
    """A missing or unreadable key; the message never contains key material."""


def _raw_public(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_key(text: str | bytes) -> Ed25519PrivateKey:
    data = text.encode() if isinstance(text, str) else text
    data = data.strip()
    if data.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            raise IntegrityKeyError("the signing key is not a readable PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IntegrityKeyError("the signing key is not an Ed25519 key")
        return key
    try:
        seed = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32:
        raise IntegrityKeyError("the signing key must be PKCS#8 PEM or base64 of a 32-byte Ed25519 seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_public_key(text: str | bytes) -> Ed25519PublicKey:
    data = text.encode() if isinstance(text, str) else text
    data = data.strip()
    if data.startswith(b"-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise IntegrityKeyError("not a readable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise IntegrityKeyError("not an Ed25519 public key")
        return key
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise IntegrityKeyError("a public key must be PEM or base64 of 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_pem(pub: Ed25519PublicKey) -> str:
    return pub.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def public_b64(pub: Ed25519PublicKey) -> str:
    return base64.b64encode(_raw_public(pub)).decode()


def key_id(pub: Ed25519PublicKey) -> str:
    return key_id_of(_raw_public(pub))


@dataclass(frozen=True)
class Signer:
    key_id: str
    private: Ed25519PrivateKey

    def sign(self, data: bytes) -> bytes:
        return self.private.sign(data)

    @property
    def public(self) -> Ed25519PublicKey:
        return self.private.public_key()


def _write_dev_key(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)


def signer(settings: Settings, create_dev_key: bool = True) -> Signer:
    """The configured signing key (see the module docstring); :class:`IntegrityKeyError` when none."""
    cfg = settings.integrity
    if cfg.signing_key_file is not None:
        try:
            text = Path(cfg.signing_key_file).read_bytes()
        except OSError as e:
            raise IntegrityKeyError(
                f"cannot read integrity.signing_key_file {cfg.signing_key_file}: {e.strerror}"
            ) from None
        key = load_private_key(text)
    elif cfg.signing_key is not None:
        key = load_private_key(cfg.signing_key.get_secret_value())
    elif settings.env == "development":
        path = Path(cfg.dev_key_file)
        if not path.exists():
            if not create_dev_key:
                raise IntegrityKeyError("no signing key configured")
            try:
                _write_dev_key(path)
            except FileExistsError:
                pass  # another process created it first
        key = load_private_key(path.read_bytes())
    else:
        raise IntegrityKeyError(
            "no signing key: set AUDITPIPE_INTEGRITY__SIGNING_KEY_FILE (or AUDITPIPE_INTEGRITY__SIGNING_KEY)"
        )
    return Signer(key_id(key.public_key()), key)


def trusted_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """{key_id: public key} of every key whose signatures verification accepts."""
    out: dict[str, Ed25519PublicKey] = {}
    try:
        s = signer(settings, create_dev_key=False)
        out[s.key_id] = s.public
    except IntegrityKeyError:
        pass  # a verifier without the private key: public_keys must list the current key
    for text in settings.integrity.public_keys:
        pub = load_public_key(text)
        out[key_id(pub)] = pub
    return out


def verify_signature(pub: Ed25519PublicKey, signature_b64: str, data: bytes) -> bool:
    try:
        sig = base64.b64decode(signature_b64, validate=True)
        pub.verify(sig, data)
        return True
    except (InvalidSignature, binascii.Error, ValueError):
        return False
