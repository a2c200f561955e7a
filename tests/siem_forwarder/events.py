"""Valid enriched events (``EnrichedEvent`` JSON with a correct ``content_hash``) for the forwarder tests,
and their records as the enricher writes them on ``audit.events.v1`` (canonical JSON, key = event_id)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from schemas.events_v1 import EnrichedEvent
from schemas.integrity import content_hash_of, event_record


def make_event(
    i: int = 0,
    org: str = "org_1",
    action: str = "deployment:create",
    event_type: str = "create",
    extra_bytes: int = 0,
) -> dict[str, Any]:
    now = datetime.now(UTC)
    ev: dict[str, Any] = {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": (now - timedelta(seconds=1)).isoformat(),
        "received_at": now.isoformat(),
        "enriched_at": now.isoformat(),
        "org_id": org,
        "project_id": "proj_1",
        "environment_id": "env_prod",
        "actor": {"type": "user", "id": "u_42", "name": 'Ada "the" Admin', "email": "ada@example.com"},
        "action": action,
        "event_type": event_type,
        "target": {"type": "deployment", "id": f"dep_{i}", "name": f"release ]{i}["},
        "source": "api",
        "status": 201,
        "change": f"created deployment {i}\nsecond line",
        "client_ip": "203.0.113.7",
        "metadata": {"seq": str(i), **{f"pad{k}": "x" * 8000 for k in range(-(-extra_bytes // 8000))}},
        "changes": [{"field": "replicas", "before": 1, "after": 3}],
        "sensitive_paths": [],
    }
    ev["content_hash"] = "0" * 64
    # Hash the model's JSON form (what goes on the wire), so the hash verifies for every consumer.
    out = orjson.loads(EnrichedEvent.model_validate(ev).model_dump_json())
    out["content_hash"] = content_hash_of(out)
    EnrichedEvent.model_validate(out)
    return out


def encode(ev: dict[str, Any]) -> bytes:
    """The record of ``ev``: RFC 8785 canonical JSON with its content_hash (schemas.integrity)."""
    return event_record(ev)
