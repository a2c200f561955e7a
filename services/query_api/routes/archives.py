"""``/api/events/archives``: archived day files per org (``services.archive``).

Downloads are audited here before the first byte; deletions are audited by services.archive (actor =
the principal, published through this app's publisher) before the file goes. Either way, no audit
event means no action (503).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse

from services.archive.job import loop_publish
from services.common.audit_events import PRODUCER_QUERY_API, AuditUnavailable, person, system_event
from services.query_api import archives as A
from services.query_api.auth import Principal
from services.query_api.deps import (
    API_ERRORS,
    AuditDep,
    EventViewer,
    ManagerPrincipal,
    SettingsDep,
    field_error,
    known_query_params,
    request_info,
)

router = APIRouter(
    prefix="/api/events/archives",
    tags=["archives"],
    responses=API_ERRORS,
    dependencies=[Depends(known_query_params)],
)

FileName = Annotated[
    str,
    PathParam(
        pattern=r"^events-\d{4}-\d{2}-\d{2}(\.\d+)?\.jsonl(\.gz)?$",
        description="events-YYYY-MM-DD[.N].jsonl[.gz]",
    ),
]
OrgQuery = Annotated[
    str | None, Query(max_length=256, description="Organisation (defaults to the token's org)")
]


def _org_for(principal: Principal, org: str | None, required: bool) -> str | None:
    """The org an archive request is about, checked against the principal's scope."""
    if principal.restricted:
        # a day file holds every project and environment of the org: not for project-scoped tokens
        raise HTTPException(403, detail="archives need a token scoped to a whole organisation")
    org = org or principal.scope.org
    if org is None and required:
        raise field_error("org", "required")
    if org is not None and not principal.may_see_org(org):
        raise HTTPException(404, detail="archive not found")
    return org


def _archive_error(e: A.ArchiveError) -> HTTPException:
    if e.code == "invalid_name":
        return field_error("filename", str(e))
    if e.code == "too_young":
        return HTTPException(409, detail=str(e))
    if e.code == "audit_failed":
        return HTTPException(503, detail="audit log unavailable; action refused")
    return HTTPException(404, detail="archive not found")


@router.get("", summary="List archive files")
def list_archives(principal: EventViewer, settings: SettingsDep, org: OrgQuery = None) -> dict:
    o = _org_for(principal, org, required=False)
    now = datetime.now(UTC)
    age = settings.retention.delete_min_age_days
    return {"archives": [A.as_dict(f, now, age) for f in A.listing(settings, o)], "delete_min_age_days": age}


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(64 * 1024):
            yield chunk


@router.get(
    "/{filename}",
    summary="Download an archive file (audited)",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "The day file (JSON lines, or gzip when archives are compressed)",
            "content": {"application/x-ndjson": {}, "application/gzip": {}},
        },
        409: API_ERRORS[404] | {"description": "Too recent to delete"},
    },
)
async def download_archive(
    filename: FileName,
    request: Request,
    principal: EventViewer,
    settings: SettingsDep,
    audit: AuditDep,
    org: OrgQuery = None,
) -> StreamingResponse:
    o = _org_for(principal, org, required=True)
    assert o is not None
    try:
        info, path = await run_in_threadpool(A.get, settings, filename, o)
    except A.ArchiveError as e:
        raise _archive_error(e) from None
    ev = system_event(
        org_id=o, actor=person(principal.name), action="audit_archive:download", event_type="access",
        target_type="audit_archive", target_id=info.file,
        change=f"Downloaded archived audit log {info.file} ({info.rows} events of {info.day})",
        metadata={"day": str(info.day), "rows": str(info.rows), "sha256": info.sha256},
        request=request_info(request), source="query_api", producer=PRODUCER_QUERY_API,
    )  # fmt: skip
    try:
        await audit.publish(ev)
    except AuditUnavailable:
        raise HTTPException(503, detail="audit log unavailable; download refused") from None
    media = "application/gzip" if info.gzip else "application/x-ndjson"
    return StreamingResponse(
        _chunks(path),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{path.name}"',
            "Content-Length": str(path.stat().st_size),
        },
    )


@router.delete(
    "/{filename}",
    summary="Delete an archive file (Manager; 30-day rule; audited)",
    responses={409: API_ERRORS[404] | {"description": "Created less than delete_min_age_days ago"}},
)
async def delete_archive(
    filename: FileName,
    principal: ManagerPrincipal,
    settings: SettingsDep,
    audit: AuditDep,
    org: OrgQuery = None,
) -> JSONResponse:
    o = _org_for(principal, org, required=True)
    assert o is not None
    publish = loop_publish(audit, asyncio.get_running_loop())
    try:
        info = await run_in_threadpool(A.delete, settings, filename, o, principal.name, publish)
    except A.ArchiveError as e:
        raise _archive_error(e) from None
    return JSONResponse({"deleted": info.file.rsplit("/", 1)[-1], "org_id": o, "rows": info.rows})
