"""How ``content_hash`` is computed and how an enriched record is written: part of the contract, so
every consumer (and an auditor with no auditpipe code) can verify it.

``content_hash = sha256(JCS(event without content_hash))`` where JCS is the JSON Canonicalization
Scheme (RFC 8785) applied to the event's JSON form.

The value of a record on ``audit.events.v1`` (and the ``event_json`` ClickHouse stores, and each line of
an archive file) is ``JCS(event)`` *with* its ``content_hash`` member. Because JCS sorts members and
``content_hash`` is never the first one (``action`` is required and sorts before it), removing the
bytes ``,"content_hash":"<hex>"`` from the record gives exactly the bytes that were hashed:

    sha256(record.replace(b',"content_hash":"' + h + b'"', b"", 1)) == h

so the hash can be re-derived from stored bytes by ClickHouse itself, by ``sha256sum``, or by this
module's :func:`verify_record`, without re-serialising anything.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import rfc8785

HASH_KEY = "content_hash"


def canonical_bytes(obj: Any) -> bytes:
    """RFC 8785 canonical JSON (the reference implementation; slow, pure Python)."""
    return rfc8785.dumps(obj)


def content_hash_of(event_json: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``event_json`` without its ``content_hash`` key."""
    body = {k: v for k, v in event_json.items() if k != HASH_KEY}
    # Round-trip through orjson so floats/ints/strings are plain JSON types before canonicalisation.
    body = orjson.loads(orjson.dumps(body))
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def verify(event_json: dict[str, Any]) -> bool:
    return event_json.get(HASH_KEY) == content_hash_of(event_json)


def hash_member(content_hash: str) -> bytes:
    """The bytes of the ``content_hash`` member as it appears inside a record (with its leading comma)."""
    return b',"' + HASH_KEY.encode() + b'":"' + content_hash.encode() + b'"'


def event_record(event_json: dict[str, Any]) -> bytes:
    """The record value of an enriched event: JCS of the event with its (re)computed ``content_hash``.

    Reference implementation for tests, tools and other writers; the enricher has a byte-identical fast
    path (``services/enricher/rules/canonical.py``).
    """
    body = orjson.loads(orjson.dumps({k: v for k, v in event_json.items() if k != HASH_KEY}))
    canon = canonical_bytes(body)
    h = hashlib.sha256(canon).hexdigest()
    record = canonical_bytes({**body, HASH_KEY: h})
    assert record.replace(hash_member(h), b"", 1) == canon  # content_hash is never the first member
    return record


def verify_record(value: bytes, strict: bool = False) -> bool:
    """True when ``value``'s ``content_hash`` matches its other bytes (and, when ``strict``, those bytes
    are exactly the RFC 8785 form of the event, as the enricher writes them)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    h = doc.get(HASH_KEY) if isinstance(doc, dict) else None
    if not isinstance(h, str) or len(h) != 64:
        return False
    member = hash_member(h)
    if member not in value:
        return False
    stripped = value.replace(member, b"", 1)
    if hashlib.sha256(stripped).hexdigest() != h:
        return False
    if strict:
        body = {k: v for k, v in doc.items() if k != HASH_KEY}
        return canonical_bytes(body) == stripped
    return True
