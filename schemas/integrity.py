"""How ``content_hash`` is computed: part of the contract, so every consumer can verify it.

``content_hash = sha256(JCS(event without content_hash))`` where JCS is the JSON Canonicalization
Scheme (RFC 8785) applied to the event's JSON form (``model_dump(mode="json", exclude_none=False)``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson
import rfc8785


def canonical_bytes(obj: dict[str, Any]) -> bytes:
    return rfc8785.dumps(obj)


def content_hash_of(event_json: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``event_json`` without its ``content_hash`` key."""
    body = {k: v for k, v in event_json.items() if k != "content_hash"}
    # Round-trip through orjson so floats/ints/strings are plain JSON types before canonicalisation.
    body = orjson.loads(orjson.dumps(body))
    return hashlib.sha256(canonical_bytes(body)).hexdigest()


def verify(event_json: dict[str, Any]) -> bool:
    return event_json.get("content_hash") == content_hash_of(event_json)
