"""Enriched event (JSON bytes from ``audit.events.v1``) -> one row of ``audit.events``, in Python.

The reference mapping of a record to the columns of ``events``. The sink no longer uses it: it hands
ClickHouse the record bytes and the view of migration 0012 computes the same columns in C++
(``tests/sink/test_input_view.py`` proves both agree, column by column). It stays for what writes rows
directly: tests and benchmark generators. Column order is :data:`COLUMNS`.
"""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime
from typing import Any

import orjson

from schemas.events_v1 import EnrichedEvent

COLUMNS: list[str] = [
    "event_id",
    "org_id",
    "occurred_at",
    "received_at",
    "enriched_at",
    "project_id",
    "environment_id",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_email",
    "action",
    "event_type",
    "target_type",
    "target_id",
    "target_name",
    "source",
    "status",
    "change",
    "client_ip",
    "client_ip_v6",
    "request_method",
    "request_path",
    "request_query",
    "request_payload",
    "user_agent",
    "peer_ip",
    "x_forwarded_for",
    "metadata",
    "changes",
    "snapshot",
    "producer",
    "sensitive_paths",
    "content_hash",
    "schema_version",
    "event_json",
]

_ZERO_V6 = ipaddress.IPv6Address("::")


def _json(v: Any) -> str:
    return "" if v is None else orjson.dumps(v).decode()


def _v6(ip: str | None) -> ipaddress.IPv6Address:
    if not ip:
        return _ZERO_V6
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:
        return _ZERO_V6
    if isinstance(a, ipaddress.IPv4Address):
        return ipaddress.IPv6Address("::ffff:" + str(a))
    return a


def _dt(v: str | datetime) -> datetime:
    return v if isinstance(v, datetime) else datetime.fromisoformat(v.replace("Z", "+00:00"))


def row_from_json(value: bytes) -> list[Any]:
    """Validate ``value`` as an EnrichedEvent and map it to a row; raises ValueError-like errors when bad.

    ``event_json`` keeps the message bytes as published, so the stored record is exactly what was hashed.
    """
    ev = EnrichedEvent.model_validate_json(value)
    return row_from_event(ev, value)


def row_from_event(ev: EnrichedEvent, value: bytes | None = None) -> list[Any]:
    req = ev.request
    actor, target = ev.actor, ev.target
    if value is None:
        value = orjson.dumps(ev.model_dump(mode="json"))
    return [
        ev.event_id if isinstance(ev.event_id, uuid.UUID) else uuid.UUID(str(ev.event_id)),
        ev.org_id,
        ev.occurred_at,
        ev.received_at,
        ev.enriched_at,
        ev.project_id or "",
        ev.environment_id or "",
        actor.type.value,
        actor.id or "",
        actor.name or "",
        actor.email or "",
        ev.action,
        ev.event_type,
        target.type,
        target.id or "",
        target.name or "",
        ev.source,
        ev.status or 0,
        ev.change or "",
        ev.client_ip or "",
        _v6(ev.client_ip),
        (req.method or "") if req else "",
        (req.path or "") if req else "",
        _json(req.query) if req else "",
        _json(req.payload) if req and req.payload is not None else "",
        (req.user_agent or "") if req else "",
        (req.peer_ip or "") if req else "",
        (req.x_forwarded_for or "") if req else "",
        dict(ev.metadata),
        _json([c.model_dump(mode="json") for c in ev.changes]) if ev.changes else "",
        _json(ev.snapshot),
        ev.producer or "",
        list(ev.sensitive_paths),
        ev.content_hash,
        ev.schema_version,
        value.decode("utf-8"),
    ]
