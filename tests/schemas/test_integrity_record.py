"""The audit.events.v1 record format (schemas/integrity.py): canonical bytes whose hash is re-derivable."""

from __future__ import annotations

import hashlib

import orjson
from hypothesis import given
from hypothesis import strategies as st

from schemas.integrity import content_hash_of, event_record, hash_member, verify_record

json_scalars = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=15,
)


def _event(extra: dict) -> dict:
    return {
        "action": "deployment:create",
        "org_id": "org-1",
        "event_id": "7d0f1f53-0d3a-4d87-9e77-2f6d3c7a0e01",
        "payload": extra,
        "content_hash": "0" * 64,
    }


@given(json_values)
def test_record_hash_is_the_hash_of_the_record_without_its_member(extra) -> None:
    rec = event_record(_event(extra))
    doc = orjson.loads(rec)
    h = doc["content_hash"]
    assert h == content_hash_of(doc)
    assert hashlib.sha256(rec.replace(hash_member(h), b"", 1)).hexdigest() == h
    assert verify_record(rec, strict=True)


def test_a_changed_byte_or_hash_fails_verification() -> None:
    rec = event_record(_event({"a": 1}))
    assert verify_record(rec)
    assert not verify_record(rec.replace(b'"a":1', b'"a":2'))
    h = orjson.loads(rec)["content_hash"]
    assert not verify_record(rec.replace(h.encode(), b"f" * 64))
    assert not verify_record(b"not json")
    assert not verify_record(b'{"action":"x:y"}')


def test_non_canonical_bytes_fail_strict_verification() -> None:
    body = b'{"org_id":"o","action":"x:y"}'  # members not sorted
    h = hashlib.sha256(body).hexdigest()
    forged = body[:-1] + b',"content_hash":"' + h.encode() + b'"}'
    assert verify_record(forged)  # self-consistent ...
    assert not verify_record(forged, strict=True)  # ... but not what the enricher writes
