"""``/api/events/archives``: archived day files per org. Download and deletion are audited first."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated, BinaryIO

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from services.query_api.archives import ArchiveError, deletable
from services.query_api.audit import AuditUnavailable, audit_event
from services.query_api.auth import Principal
from services.query_api.deps import (
    ArchivesDep,
    AuditDep,
    EventViewer,
    ManagerPrincipal,
    SettingsDep,
    field_error,
)

router = APIRouter(prefix="/api/events/archives", tags=["archives"])

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


def _archive_error(e: ArchiveError) -> HTTPException:
    if e.kind == "bad_name":
        return field_error("filename", str(e))
    if e.kind == "too_recent":
        return HTTPException(409, detail=str(e))
    return HTTPException(404, detail="archive not found")


def _req(request: Request) -> dict:
    return {
        "method": request.method,
        "path": request.url.path,
        "query": dict(request.query_params),
        "peer_ip": request.client.host if request.client else None,
        "user_agent": request.headers.get("user-agent"),
    }


@router.get("", summary="List archive files")
def list_archives(
    principal: EventViewer, settings: SettingsDep, archives: ArchivesDep, org: OrgQuery = None
) -> dict:
    o = _org_for(principal, org, required=False)
    now = datetime.now(UTC)
    files = [f.as_dict(now, settings.retention.delete_min_age_days) for f in archives.list(o)]
    return {"archives": files, "delete_min_age_days": settings.retention.delete_min_age_days}


def _chunks(fh: BinaryIO) -> Iterator[bytes]:
    with fh:
        while chunk := fh.read(64 * 1024):
            yield chunk


@router.get("/{filename}", summary="Download an archive file (audited)")
async def download_archive(
    filename: str,
    request: Request,
    principal: EventViewer,
    archives: ArchivesDep,
    audit: AuditDep,
    org: OrgQuery = None,
) -> StreamingResponse:
    o = _org_for(principal, org, required=True)
    assert o is not None
    try:
        info = archives.get(o, filename)
    except ArchiveError as e:
        raise _archive_error(e) from None
    ev = audit_event(
        principal, o, "audit_archive:download", "access", "audit_archive", filename,
        f"Downloaded archived audit log {filename}", _req(request),
    )  # fmt: skip
    try:
        await audit.publish(ev)
    except AuditUnavailable:
        raise HTTPException(503, detail="audit log unavailable; download refused") from None
    media = "application/gzip" if info.gzip else "application/x-ndjson"
    return StreamingResponse(
        _chunks(archives.open(o, filename)),
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Content-Length": str(info.size),
        },
    )


@router.delete("/{filename}", summary="Delete an archive file (Manager; 30-day rule; audited)")
async def delete_archive(
    filename: str,
    request: Request,
    principal: ManagerPrincipal,
    archives: ArchivesDep,
    audit: AuditDep,
    org: OrgQuery = None,
) -> JSONResponse:
    o = _org_for(principal, org, required=True)
    assert o is not None
    try:
        info = archives.get(o, filename)
        if not deletable(info.created_at, datetime.now(UTC), archives.min_age_days):
            raise ArchiveError(
                "too_recent", f"archive files can be deleted only {archives.min_age_days} days after creation"
            )
    except ArchiveError as e:
        raise _archive_error(e) from None
    ev = audit_event(
        principal, o, "audit_archive:delete", "delete", "audit_archive", filename,
        f"Deleted archived audit log {filename} ({info.size} bytes)", _req(request),
    )  # fmt: skip
    try:
        await audit.publish(ev)
    except AuditUnavailable:
        raise HTTPException(503, detail="audit log unavailable; deletion refused") from None
    try:
        archives.delete(o, filename)
    except ArchiveError as e:
        raise _archive_error(e) from None
    return JSONResponse({"deleted": filename, "org_id": o, "audit_event_id": str(ev.event_id)})
