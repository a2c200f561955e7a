"""Digest records: what ``auditpipe seal`` signs and publishes, so an auditor can verify with no auditpipe
code (topic ``audit.digests.v1``, the digest files beside the archives, ClickHouse ``digests``).

A digest covers one **window** of one organisation: the events the pipeline first stored (ClickHouse
``events.inserted_at``) in ``[window_start, window_end)``. Its fields:

- ``event_count`` and ``merkle_root``: the RFC 6962 Merkle Tree Hash (SHA-256) over the window's events.
  Leaves are the events' ``content_hash`` values as raw 32 bytes, ordered by ``event_id`` ascending as
  lower-case text (the same as its 16 bytes compared big-endian); leaf hash = SHA-256(0x00 || leaf),
  node hash = SHA-256(0x01 || left || right), split at the largest power of two below the count (RFC 6962
  section 2.1). The root of an empty window is SHA-256 of the empty string.
- ``prev_digest_hash``: :func:`digest_hash` of this org's previous digest (:data:`GENESIS` for its first);
  ``sequence`` counts the org's digests from 1. Together they make a chain per organisation: removing,
  reordering or replacing a digest breaks it.
- ``key_id`` and ``signature``: Ed25519 (RFC 8032) over :func:`signing_bytes` — the RFC 8785 canonical
  JSON of the record without ``signature`` — base64 (standard alphabet, padded). ``key_id`` is
  :func:`key_id_of` the public key.

The record's published form (a topic value, a line of a digest file) is :func:`record_bytes`: RFC 8785
canonical JSON of the whole record. Timestamps are UTC, ``YYYY-MM-DDTHH:MM:SS.mmmZ``.
"""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

GENESIS = "0" * 64
"""``prev_digest_hash`` of an organisation's first digest."""

SIGNATURE_KEY = "signature"
HEX64 = r"^[0-9a-f]{64}$"
TIME = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"

Hex64 = Annotated[str, Field(pattern=HEX64)]
Time = Annotated[str, Field(pattern=TIME, description="UTC, YYYY-MM-DDTHH:MM:SS.mmmZ")]


class Digest(BaseModel):
    """One signed digest of one organisation's window (topic ``audit.digests.v1``)."""

    model_config = ConfigDict(extra="forbid")

    schema_version: Literal[1] = 1
    org_id: Annotated[str, Field(min_length=1, max_length=256)]
    sequence: Annotated[int, Field(ge=1, description="This org's digests counted from 1")]
    window_start: Time
    window_end: Time
    event_count: Annotated[int, Field(ge=0)]
    merkle_root: Hex64 = Field(description="RFC 6962 Merkle Tree Hash of the window's content hashes")
    prev_digest_hash: Hex64 = Field(description="digest_hash of the org's previous digest, or 64 zeros")
    sealed_at: Time
    key_id: Annotated[str, Field(pattern=r"^ed25519:[0-9a-f]{32}$")]
    signature: Annotated[str, Field(min_length=86, max_length=88, description="Ed25519, base64")]


def fmt_time(t: datetime) -> str:
    """The one timestamp form of digests: UTC with milliseconds and a Z."""
    t = t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def record_bytes(record: dict[str, Any]) -> bytes:
    """The published bytes of a digest: RFC 8785 canonical JSON of the whole record."""
    return rfc8785.dumps(record)


def signing_bytes(record: dict[str, Any]) -> bytes:
    """What the signature covers: RFC 8785 canonical JSON of the record without ``signature``."""
    return rfc8785.dumps({k: v for k, v in record.items() if k != SIGNATURE_KEY})


def digest_hash(record: dict[str, Any]) -> str:
    """SHA-256 (hex) of the record's published bytes, signature included: the next digest's
    ``prev_digest_hash``."""
    return hashlib.sha256(record_bytes(record)).hexdigest()


def key_id_of(public_key_raw: bytes) -> str:
    """``ed25519:`` + the first 16 bytes (hex) of SHA-256 of the raw 32-byte public key."""
    return "ed25519:" + hashlib.sha256(public_key_raw).hexdigest()[:32]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def leaf_hash(content_hash: str) -> bytes:
    """RFC 6962 leaf hash of one event: SHA-256(0x00 || the 32 bytes of its content_hash)."""
    return hashlib.sha256(b"\x00" + bytes.fromhex(content_hash)).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").hexdigest()


def merkle_root(content_hashes: list[str]) -> str:
    """RFC 6962 Merkle Tree Hash (hex) of ``content_hashes`` in the given order (sort by event_id first).

    Computed bottom-up: pair neighbours level by level, carrying a lone last node up unchanged — the same
    tree as RFC 6962's recursive split at the largest power of two below n.
    """
    if not content_hashes:
        return EMPTY_ROOT
    level = [leaf_hash(h) for h in content_hashes]
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0].hex()


def merkle_root_recursive(content_hashes: list[str]) -> str:
    """RFC 6962 section 2.1 written as the RFC does (reference for tests and auditors)."""

    def mth(d: list[bytes]) -> bytes:
        n = len(d)
        if n == 0:
            return hashlib.sha256(b"").digest()
        if n == 1:
            return hashlib.sha256(b"\x00" + d[0]).digest()
        k = 1
        while k * 2 < n:
            k *= 2
        return hashlib.sha256(b"\x01" + mth(d[:k]) + mth(d[k:])).digest()

    return mth([bytes.fromhex(h) for h in content_hashes]).hex()
