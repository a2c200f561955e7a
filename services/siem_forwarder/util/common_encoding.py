"""Small pure helpers the encoders share: timestamps, splicing a record into JSON, size checks."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from services.siem_forwarder.util.delivery import EncodeError

# What pydantic (the enricher) writes for a UTC time: RFC 3339 with Z and at most 6 fraction digits.
_UTC_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,6})?Z")


def parse_ts(value: Any) -> datetime:
    """An RFC 3339 time (UTC if it has no offset); :class:`EncodeError` when it is none."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise EncodeError("invalid_event", "occurred_at: missing")
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EncodeError("invalid_event", f"occurred_at: not an RFC 3339 time: {value[:64]!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def time_text(doc: dict[str, Any]) -> Any:
    return doc.get("occurred_at") or doc.get("received_at")


def event_time(doc: dict[str, Any]) -> datetime:
    return parse_ts(time_text(doc))


def rfc3339_utc(value: Any) -> str:
    """The time as ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``; the record's own text when it already is one."""
    if isinstance(value, str) and _UTC_Z.fullmatch(value):
        return value
    return parse_ts(value).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


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
