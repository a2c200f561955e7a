"""The one builder of the audit system's own events and the rule that keeps them from being suppressed."""

from __future__ import annotations

from schemas.events_v1 import RawEvent
from services.common.audit_events import (
    PRODUCER_ARCHIVE,
    PRODUCER_QUERY_API,
    SYSTEM,
    is_about_audit_system,
    person,
    system_event,
)


def test_system_event_is_a_contract_raw_event() -> None:
    ev = system_event(
        org_id="org-1",
        actor=person("ada@acme.test"),
        action="audit_export:download",
        target_type="audit_export",
        target_id="x" * 400,
        change="Exported 12 events as CSV",
        producer=PRODUCER_QUERY_API,
        metadata={"rows": "12"},
    )
    assert isinstance(ev, RawEvent)
    assert ev.event_type == "download" and ev.actor.type == "user" and ev.source == "auditpipe"
    assert len(ev.target.id) == 256
    again = RawEvent.model_validate_json(ev.model_dump_json(exclude_none=True))
    assert again == ev
    sys_ev = system_event(
        org_id="org-1",
        actor=SYSTEM,
        action="audit_archive:create",
        target_type="audit_archive",
        target_id="org-1/events-2026-01-01.jsonl",
        change="Archived",
        producer=PRODUCER_ARCHIVE,
    )
    assert sys_ev.source == "system" and sys_ev.actor.type == "system"


def test_audit_system_events_are_recognised() -> None:
    assert is_about_audit_system("audit_archive:delete", None)
    assert is_about_audit_system("organization:audit_config_update", "anything")
    assert is_about_audit_system("retention:update", PRODUCER_QUERY_API)
    assert is_about_audit_system("audit_token:create", "terraform-ci")
    assert not is_about_audit_system("deployment:create", "terraform-ci")
    assert not is_about_audit_system("organization:update", None)
    assert not is_about_audit_system("my_audit_archive_x:create", None)
