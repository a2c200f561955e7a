"""The enriched record's bytes: RFC 8785 canonical JSON with its ``content_hash`` (schemas/integrity.py),
written by orjson wherever orjson's output is byte-identical to RFC 8785, which is nearly always.

``rfc8785`` (pure Python) costs ~100 µs per event; orjson with sorted keys ~1 µs and emits exactly the
RFC 8785 bytes when (checked by the scrubbing walk, ``sensitive.Walk.canonical_fast``):

- every float is non-integral with 1e-5 <= |f| < 1e14 (integral floats below 2**53 are rewritten as
  ints by the walk: RFC 8785 writes them as integers too); outside that range the two number formats
  differ (``1e-06`` vs ``0.000001``, ``1e+16`` vs ``10000000000000000``);
- every integer is within ±(2**53 - 1) (the contract's range; the walk refuses others);
- no object key contains a character at or above U+E000 (RFC 8785 sorts keys by UTF-16 code units,
  orjson by code points; the two orders differ only there).

Strings need no condition: both escape only ``"``, ``\\`` and control characters, the same way.
Otherwise the reference implementation is used. tests/enricher/test_canonical.py checks the equality on
hypothesis-generated documents.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import orjson

from schemas.integrity import HASH_KEY, canonical_bytes

_SORT = orjson.OPT_SORT_KEYS


def canonical(body: dict[str, Any], fast: bool) -> bytes:
    """RFC 8785 bytes of ``body`` (plain JSON types only)."""
    return orjson.dumps(body, option=_SORT) if fast else canonical_bytes(body)


# A per-process random stand-in for the hash: serialise once with it in place, cut its member out to get
# the bytes to hash, then put the hash in its place. Nobody can know it, so it occurs exactly once.
_NONCE = os.urandom(32).hex()
_NONCE_B = _NONCE.encode()
_MEMBER = b',"' + HASH_KEY.encode() + b'":"' + _NONCE_B + b'"'


def record_bytes(body: dict[str, Any], fast: bool) -> tuple[bytes, str]:
    """(record value, content_hash) of an enriched event ``body`` given without ``content_hash``;
    ``body`` gains its ``content_hash``. One serialisation: ``content_hash`` is never the first member
    (``action`` sorts before it), so cutting ``,"content_hash":"…"`` out of the full canonical form
    gives exactly the canonical form of the event without it."""
    body[HASH_KEY] = _NONCE
    full = canonical(body, fast)
    h = hashlib.sha256(full.replace(_MEMBER, b"", 1)).hexdigest()
    body[HASH_KEY] = h
    return full.replace(_NONCE_B, h.encode(), 1), h
