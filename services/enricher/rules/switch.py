"""The per-organisation audit switch as pure rules: which orgs are off, what is suppressed, and the
audited record of a switch changed in settings. The I/O around them is ``services/enricher/switch.py``.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from schemas.events_v1 import EnrichedEvent, OrgSwitch
from schemas.integrity import event_record
from services.common.audit_events import PRODUCER_ENRICHER, is_about_audit_system

SWITCH_ACTION = "organization:audit_config_update"
# Namespace of the switch events' ids (uuid5 of org, state and the previous state record): fixed forever.
SWITCH_NAMESPACE = uuid.UUID("5b0c6f0e-6c1a-4d7e-9f55-8a7c0e0a1e11")


def suppressed(org_id: str, action: str, producer: str | None, disabled: frozenset[str]) -> bool:
    """True when the event is not stored: its org has audit off, and it is not about the audit system
    itself (archives, exports, settings and switch changes, tokens, digests stay on the record)."""
    return org_id in disabled and not is_about_audit_system(action, producer)


def switch_event_id(org_id: str, enabled: bool, previous_offset: int) -> uuid.UUID:
    """Same id if the same transition is emitted twice (crash between emit and state write)."""
    return uuid.uuid5(SWITCH_NAMESPACE, f"switch/{org_id}/{enabled}/{previous_offset}")


def switch_transitions(
    known: dict[str, bool], disabled: frozenset[str]
) -> dict[str, tuple[bool | None, bool]]:
    """org -> (audit_enabled before, after) for every org whose switch differs from the last known state.

    ``known`` holds the last recorded state (org -> audit_enabled). An org never recorded counts as
    enabled (the default), so only switching it off is a transition.
    """
    out: dict[str, tuple[bool | None, bool]] = {}
    for org in disabled:
        if known.get(org, True):
            out[org] = (known.get(org), False)
    for org, enabled in known.items():
        if not enabled and org not in disabled:
            out[org] = (False, True)
    return out


def parse_org_switch(key: bytes | None, value: bytes | None) -> OrgSwitch | None:
    """A record of the API's switch topic, or None when it is not one (wrong key, bad JSON, a tombstone)."""
    if key is None or value is None:
        return None
    try:
        rec = OrgSwitch.model_validate_json(value)
    except ValueError:
        return None
    return rec if rec.org_id == key.decode("utf-8", "replace") else None


def effective_disabled(settings_off: frozenset[str], api_state: dict[str, bool]) -> frozenset[str]:
    """Orgs whose events are not stored: listed in settings (an operator override the API cannot lift)
    or switched off through the query API (the latest record per org)."""
    return settings_off | frozenset(org for org, enabled in api_state.items() if not enabled)


def switch_event(
    org_id: str, before: bool | None, after: bool, *, event_id: uuid.UUID, at: datetime
) -> bytes:
    """The audited record (``audit.events.v1`` bytes) of turning audit logging on or off for an org in
    settings. ``at`` is the time recorded with the new state, so a re-emission is byte-identical."""
    state = "on" if after else "off"
    event = EnrichedEvent(
        event_id=event_id,
        occurred_at=at,
        received_at=at,
        enriched_at=at,
        org_id=org_id,
        actor={"type": "system", "name": "system"},
        action=SWITCH_ACTION,
        event_type="update",
        target={"type": "organization", "id": org_id},
        source="system",
        change=f"Audit logging turned {state}",
        changes=[{"field": "audit_enabled", "before": True if before is None else before, "after": after}],
        metadata={"audit_enabled": str(after).lower(), "set_by": "settings:enricher.audit_disabled_orgs"},
        producer=PRODUCER_ENRICHER,
        content_hash="0" * 64,
    )
    return event_record(event.model_dump(mode="json"))
