"""``/api/settings/retention``: per-org retention days and the audit on/off switch. Changes are audited.

Both act on a whole organisation (retention decides which days the archive job removes for every project;
the switch silences every project's events), so reading and changing them needs a Manager whose token is
not narrowed to projects or environments (:data:`~services.query_api.deps.OrgManager`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from schemas.events_v1 import OrgSwitch
from schemas.topics import ORG_SWITCH, spec_as
from services.common.audit_events import PRODUCER_QUERY_API, AuditUnavailable, person, system_event
from services.common.kafka import ensure_topics
from services.query_api.deps import (
    API_ERRORS,
    AuditDep,
    ClientDep,
    OrgManager,
    SettingsDep,
    ch_settings,
    field_error,
    known_query_params,
    request_info,
)

router = APIRouter(
    prefix="/api/settings",
    tags=["settings"],
    responses=API_ERRORS,
    dependencies=[Depends(known_query_params)],
)

OrgQuery = Annotated[
    str | None, Query(max_length=256, description="Organisation (defaults to the token's org)")
]


class RetentionUpdate(BaseModel):
    retention_days: int = Field(
        ge=1, description="Days events stay queryable before archiving (1..365, 3650 self-hosted)"
    )
    audit_enabled: bool = Field(description="Audit on/off for the org")


def _org(principal, org: str | None) -> str:  # noqa: ANN001
    org = org or principal.scope.org
    if not org:
        raise field_error("org", "required")
    if not principal.may_see_org(org):
        raise HTTPException(404, detail="organisation not found")
    return org


def _current(client, settings, org: str) -> dict:  # noqa: ANN001
    db = settings.clickhouse_database
    rows = client.query(
        f"SELECT retention_days, audit_enabled, updated_by, updated_at FROM {db}.org_settings FINAL "  # noqa: S608
        "WHERE org_id = {org:String} LIMIT 1",
        parameters={"org": org},
        settings=ch_settings(settings),
    ).result_rows
    r = settings.retention
    base = {"org_id": org, "min_days": 1, "max_days": r.max_days, "self_hosted": r.self_hosted}
    if not rows:
        return {
            **base,
            "retention_days": r.default_days,
            "audit_enabled": True,
            "updated_by": None,
            "updated_at": None,
        }
    days, enabled, by, at = rows[0]
    return {
        **base,
        "retention_days": int(days),
        "audit_enabled": bool(enabled),
        "updated_by": by,
        "updated_at": at.astimezone(UTC).isoformat(timespec="milliseconds"),
    }


@router.get("/retention", summary="Retention days and audit switch of an org (whole-org Manager)")
async def get_retention(
    principal: OrgManager, settings: SettingsDep, client: ClientDep, org: OrgQuery = None
) -> dict:
    return await run_in_threadpool(_current, client, settings, _org(principal, org))


@router.put("/retention", summary="Change retention days or the audit switch (whole-org Manager; audited)")
async def put_retention(
    body: RetentionUpdate,
    request: Request,
    principal: OrgManager,
    settings: SettingsDep,
    client: ClientDep,
    audit: AuditDep,
    org: OrgQuery = None,
) -> dict:
    o = _org(principal, org)
    hi = settings.retention.max_days
    if not 1 <= body.retention_days <= hi:
        raise HTTPException(
            422,
            detail=[
                {
                    "loc": ["body", "retention_days"],
                    "msg": f"must be between 1 and {hi}",
                    "type": "value_error",
                }
            ],
        )
    before = await run_in_threadpool(_current, client, settings, o)
    changes = [
        {"field": k, "before": before[k], "after": getattr(body, k)}
        for k in ("retention_days", "audit_enabled")
        if before[k] != getattr(body, k)
    ]
    if not changes:
        return before
    text = ", ".join(f"{c['field']} {c['before']} -> {c['after']}" for c in changes)
    ev = system_event(
        org_id=o, actor=person(principal.name), action="audit_settings:update", event_type="update",
        target_type="audit_settings", target_id=o, change=f"Changed audit settings: {text}",
        changes=changes, request=request_info(request), source="query_api", producer=PRODUCER_QUERY_API,
    )  # fmt: skip
    try:
        await audit.publish(ev)
    except AuditUnavailable:
        raise HTTPException(503, detail="audit log unavailable; change refused") from None
    if before["audit_enabled"] != body.audit_enabled:
        # the enricher follows this topic live (services/enricher/switch.py SwitchFollower)
        rec = OrgSwitch(
            org_id=o,
            audit_enabled=body.audit_enabled,
            changed_by=principal.name,
            changed_at=datetime.now(UTC),
        )
        try:
            # compacted (the latest record per org is the state): never let the broker auto-create it
            await ensure_topics(settings, [spec_as(ORG_SWITCH, settings.query_api.switch_topic)], timeout_s=5)
            await audit.send(settings.query_api.switch_topic, o, rec.model_dump_json().encode())
        except Exception:  # noqa: BLE001 - any failure (broker down, timeout): the switch is not in force
            # audited as requested, not in force: stored settings unchanged; a retry redoes both
            raise HTTPException(
                503, detail="audit switch could not be published; change not applied"
            ) from None
    await run_in_threadpool(
        client.insert,
        f"{settings.clickhouse_database}.org_settings",
        [[o, body.retention_days, body.audit_enabled, principal.name, datetime.now(UTC)]],
        column_names=["org_id", "retention_days", "audit_enabled", "updated_by", "updated_at"],
    )
    return await run_in_threadpool(_current, client, settings, o)
