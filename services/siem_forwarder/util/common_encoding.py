"""Small pure helpers the encoders share: timestamps, splicing a record into JSON, size checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from services.siem_forwarder.util.delivery import EncodeError


def parse_ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise EncodeError("invalid_event", f"not an RFC 3339 time: {value[:64]!r}") from None
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return datetime.now(UTC)


def event_time(doc: dict[str, Any]) -> datetime:
    return parse_ts(doc.get("occurred_at") or doc.get("received_at"))


def record_time(record: bytes, doc: dict[str, Any] | None) -> datetime:
    """The event's time, from ``doc`` when parsed, else read from the record for this one member."""
    if doc is None:
        doc = parse_record(record)
    return event_time(doc)


def parse_record(record: bytes) -> dict[str, Any]:
    """The record as a JSON object; :class:`EncodeError` (``invalid_json``) when it is not one."""
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError as e:
        raise EncodeError("invalid_json", f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise EncodeError("invalid_json", "not a JSON object")
    return doc


def with_member(obj: dict[str, Any], key: str, record: bytes) -> bytes:
    """``obj`` as JSON with one more member ``key`` whose value is ``record``'s bytes, unchanged."""
    head = orjson.dumps(obj)
    sep = b"," if len(head) > 2 else b""
    return head[:-1] + sep + orjson.dumps(key) + b":" + record + b"}"


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def check_size(data: bytes, limit: int, what: str) -> bytes:
    if len(data) > limit:
        raise EncodeError("event_too_large", f"{what} is {len(data)} bytes, over the {limit}-byte limit")
    return data
