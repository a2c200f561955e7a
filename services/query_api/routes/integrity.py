"""``/api/integrity``: tamper evidence for the viewer and for auditors (services/integrity).

- ``GET /api/integrity/keys`` — the public keys digests are verified with (any analyst);
- ``GET /api/integrity/status`` — is the shown range sealed, and when was it last verified (any analyst
  of the org; cheap: reads what the sealer and earlier verifications recorded);
- ``GET /api/integrity`` — run a verification of an org (optionally a storage-time range) now: Manager
  only, audited as ``audit_integrity:verify`` before it runs (no audit event, no verification: 503); the
  result is recorded for the status above. Exit-code semantics of ``auditpipe verify``: ``ok`` is true
  only when everything checks.

Digests cover whole organisations, so project- or environment-scoped tokens get 403.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool

from services.common.audit_events import PRODUCER_QUERY_API, AuditUnavailable, person, system_event
from services.common.settings import Settings
from services.integrity.keys import IntegrityKeyError, key_id, load_public_key, public_b64, public_pem, signer
from services.integrity.rules import fmt
from services.integrity.topic import read_digests, read_digests_blocking
from services.integrity.verify import verify
from services.query_api.auth import Principal
from services.query_api.deps import (
    API_ERRORS,
    AuditDep,
    ClientDep,
    EventViewer,
    ManagerPrincipal,
    SettingsDep,
    ch_settings,
    field_error,
    known_query_params,
    request_info,
    utc_param,
)

router = APIRouter(
    prefix="/api/integrity",
    tags=["integrity"],
    responses=API_ERRORS,
    dependencies=[Depends(known_query_params)],
)

OrgQuery = Annotated[str | None, Query(max_length=256, description="Organisation (defaults to the token's)")]
SinceQuery = Annotated[datetime | None, Query(description="Windows stored from (RFC 3339; UTC if naive)")]
UntilQuery = Annotated[datetime | None, Query(description="Windows stored until")]


def _org(principal: Principal, org: str | None) -> str:
    if principal.restricted:
        raise HTTPException(403, detail="integrity covers whole organisations: needs an org-wide token")
    org = org or principal.scope.org
    if not org:
        raise field_error("org", "required")
    if not principal.may_see_org(org):
        raise HTTPException(404, detail="organisation not found")
    return org


def _range(since: datetime | None, until: datetime | None) -> tuple[datetime | None, datetime | None]:
    since, until = utc_param("since", since), utc_param("until", until)
    if since and until and since >= until:
        raise field_error("until", "must be after since")
    return since, until


@router.get("/keys", summary="Public keys that digest signatures are verified with")
def keys(principal: EventViewer, settings: SettingsDep) -> dict:
    out: list[dict[str, Any]] = []
    try:
        cur = signer(settings, create_dev_key=False)
        out.append({"key_id": cur.key_id, "status": "signing", "public_key": public_b64(cur.public),
                    "pem": public_pem(cur.public)})  # fmt: skip
    except IntegrityKeyError:
        pass
    for text in settings.integrity.public_keys:
        pub = load_public_key(text)
        if all(k["key_id"] != key_id(pub) for k in out):
            out.append({"key_id": key_id(pub), "status": "trusted", "public_key": public_b64(pub),
                        "pem": public_pem(pub)})  # fmt: skip
    return {"keys": out, "algorithm": "Ed25519"}


def _status(
    client: Any, settings: Settings, org: str, since: datetime | None, until: datetime | None
) -> dict:
    db = settings.clickhouse_database
    cs = ch_settings(settings)
    n, end = client.query(
        f"SELECT count(), max(window_end) FROM {db}.digests WHERE org_id = {{org:String}}",  # noqa: S608
        parameters={"org": org},
        settings=cs,
    ).result_rows[0]
    sealed_through = end.astimezone(UTC) if n else None
    last = client.query(
        f"SELECT checked_at, ok, summary, since, until, checked_by FROM {db}.integrity_checks "  # noqa: S608
        "WHERE org_id = {org:String} ORDER BY checked_at DESC LIMIT 1",
        parameters={"org": org},
        settings=cs,
    ).result_rows
    check = None
    if last:
        at, ok, summary, c_since, c_until, by = last[0]
        covers = (c_since is None or (since is not None and c_since <= since)) and (
            c_until is None or (until is not None and until <= c_until)
        )
        check = {"checked_at": fmt(at), "ok": bool(ok), "summary": summary, "since": fmt(c_since),
                 "until": fmt(c_until), "checked_by": by, "covers_range": covers}  # fmt: skip
    now = datetime.now(UTC)
    upto = min(until, now) if until else now
    return {
        "org_id": org,
        "sealed_through": fmt(sealed_through),
        "range_sealed": sealed_through is not None and upto <= sealed_through,
        "last_check": check,
    }


@router.get("/status", summary="Whether a range is sealed, and the last verification")
async def status(
    principal: EventViewer,
    settings: SettingsDep,
    client: ClientDep,
    org: OrgQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
) -> dict:
    o = _org(principal, org)
    since, until = _range(since, until)
    return await run_in_threadpool(_status, client, settings, o, since, until)


@router.get("", summary="Verify an organisation now (Manager; audited)")
async def run_verification(
    request: Request,
    principal: ManagerPrincipal,
    settings: SettingsDep,
    client: ClientDep,
    audit: AuditDep,
    org: OrgQuery = None,
    since: SinceQuery = None,
    until: UntilQuery = None,
) -> dict:
    o = _org(principal, org)
    since, until = _range(since, until)
    span = f"{fmt(since) or 'the beginning'} to {fmt(until) or 'now'}"
    ev = system_event(
        org_id=o, actor=person(principal.name), action="audit_integrity:verify", event_type="verify",
        target_type="audit_integrity", target_id=o,
        change=f"Verified the integrity of the audit log from {span}", request=request_info(request),
        source="query_api", producer=PRODUCER_QUERY_API,
    )  # fmt: skip
    try:
        await audit.publish(ev)
    except AuditUnavailable:
        raise HTTPException(503, detail="audit log unavailable; verification refused") from None
    try:
        records = await read_digests(settings)
    except Exception:  # noqa: BLE001 - broker away: say so, no stack trace
        raise HTTPException(
            503, detail="the digest topic cannot be read; verification not possible"
        ) from None
    rep = await run_in_threadpool(
        verify, settings, records, o, since, until, reread_topic=lambda: read_digests_blocking(settings)
    )
    body = rep.to_dict()
    sealed = rep.sealed_through.get(o)
    await run_in_threadpool(
        client.insert,
        f"{settings.clickhouse_database}.integrity_checks",
        [[o, since, until, datetime.fromisoformat(sealed.replace("Z", "+00:00")) if sealed else None, rep.ok,
          rep.summary(), orjson.dumps(body).decode(), principal.name]],
        column_names=["org_id", "since", "until", "sealed_through", "ok", "summary", "report", "checked_by"],
    )  # fmt: skip
    return body
