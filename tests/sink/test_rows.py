from __future__ import annotations

import uuid

import orjson

from schemas.integrity import content_hash_of
from services.sink.rows import COLUMNS, row_from_json


def _event(**kw):  # noqa: ANN003, ANN202
    ev = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": "2026-11-20T09:15:02.123Z",
        "received_at": "2026-11-20T09:15:02.200Z",
        "enriched_at": "2026-11-20T09:15:02.300Z",
        "org_id": "org-a",
        "actor": {"type": "user", "id": "u-1", "name": "Ada"},
        "action": "environment:delete",
        "event_type": "delete",
        "target": {"type": "environment", "id": "env-1", "name": "Prod"},
        "source": "console",
        "client_ip": "203.0.113.9",
        "request": {"method": "DELETE", "path": "/api/environments/env-1", "payload": {"force": True}},
        **kw,
    }
    ev["content_hash"] = content_hash_of(ev)
    return orjson.dumps(ev)


def test_row_has_every_column_and_maps_ipv4_into_ipv6() -> None:
    value = _event()
    row = row_from_json(value)
    assert len(row) == len(COLUMNS)
    r = dict(zip(COLUMNS, row, strict=True))
    assert str(r["client_ip_v6"]) == "::ffff:cb00:7109"
    assert r["request_payload"] == '{"force":true}'
    assert r["event_json"].encode() == value
    assert r["target_type"] == "environment" and r["actor_type"] == "user"
