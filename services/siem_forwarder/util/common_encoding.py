"""Small pure helpers the encoders share: timestamps and size checks."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from services.siem_forwarder.util.delivery import EncodeError


def parse_ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
    return datetime.now(UTC)


def event_time(doc: dict[str, Any]) -> datetime:
    return parse_ts(doc.get("occurred_at") or doc.get("received_at"))


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def check_size(data: bytes, limit: int, what: str) -> bytes:
    if len(data) > limit:
        raise EncodeError("event_too_large", f"{what} is {len(data)} bytes, over the {limit}-byte limit")
    return data
