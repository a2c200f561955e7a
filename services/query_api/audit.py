"""Audit events of the query API's own sensitive actions: an adapter from a :class:`Principal` to the one
builder and publisher in :mod:`services.common.audit_events` (published to ``audit.raw.v1``; the action
happens only after its audit event was acknowledged by Kafka)."""

from __future__ import annotations

from typing import Any

from schemas.events_v1 import RawEvent
from services.common.audit_events import (
    PRODUCER_QUERY_API,
    AuditPublisher,
    AuditUnavailable,
    person,
    system_event,
)
from services.query_api.auth import Principal

__all__ = ["AuditPublisher", "AuditUnavailable", "audit_event"]


def audit_event(
    principal: Principal,
    org_id: str,
    action: str,
    event_type: str,
    target_type: str,
    target_id: str,
    change: str,
    request: dict[str, Any],
    changes: list[dict[str, Any]] | None = None,
) -> RawEvent:
    """The audit record of one sensitive action by ``principal`` (pure)."""
    return system_event(
        org_id=org_id,
        actor=person(principal.name),
        action=action,
        event_type=event_type,
        target_type=target_type,
        target_id=target_id,
        change=change,
        request=request,
        changes=changes,
        source="query_api",
        producer=PRODUCER_QUERY_API,
    )
