"""What handlers declare in their signatures (FastAPI-template style ``Annotated`` aliases)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from clickhouse_connect.driver.client import Client
from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.common.settings import Settings
from services.query_api.audit import AuditPublisher
from services.query_api.auth import Principal, authenticate
from services.query_api.query import FilterError, Filters

_bearer = HTTPBearer(auto_error=False, description="A query-API token (see QueryApiSettings.tokens)")


def field_error(field: str, msg: str) -> HTTPException:
    """422 in FastAPI's own shape, naming the query parameter."""
    return HTTPException(422, detail=[{"loc": ["query", field], "msg": msg, "type": "value_error"}])


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_client(request: Request) -> Client:
    return request.app.state.clickhouse


def get_audit(request: Request) -> AuditPublisher:
    return request.app.state.audit


SettingsDep = Annotated[Settings, Depends(get_settings)]
ClientDep = Annotated[Client, Depends(get_client)]
AuditDep = Annotated[AuditPublisher, Depends(get_audit)]


def current_principal(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # settings tokens plus the tokens file, re-read when it changed (services/common/tokens.py)
    p = authenticate(request.app.state.tokens.query(), creds.credentials if creds else None)
    if p is None:
        raise HTTPException(
            401, detail="missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"}
        )
    return p


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]


def event_viewer(p: CurrentPrincipal) -> Principal:
    if not ({"EventView", "Manager"} & p.roles):
        raise HTTPException(403, detail="requires the EventView role")
    return p


def manager(p: CurrentPrincipal) -> Principal:
    if not p.is_manager:
        raise HTTPException(403, detail="requires the Manager role")
    return p


EventViewer = Annotated[Principal, Depends(event_viewer)]
ManagerPrincipal = Annotated[Principal, Depends(manager)]


def _utc(v: datetime | None) -> datetime | None:
    if v is None:
        return None
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


def _nonempty(field: str, values: list[str] | None) -> list[str]:
    out = [v for v in (values or []) if v != ""]
    for v in out:
        if len(v) > 1024:
            raise field_error(field, "value longer than 1024 characters")
    return out


def event_filters(
    since: Annotated[
        datetime | None, Query(description="occurred_at >= since (RFC 3339; UTC if naive)")
    ] = None,
    until: Annotated[datetime | None, Query(description="occurred_at < until")] = None,
    org: Annotated[str | None, Query(max_length=256, description="Organisation id")] = None,
    action: Annotated[
        list[str] | None, Query(description="One or many actions, e.g. deployment:create")
    ] = None,
    event_type: Annotated[list[str] | None, Query()] = None,
    target_type: Annotated[list[str] | None, Query()] = None,
    target_id: Annotated[str | None, Query(max_length=256)] = None,
    actor: Annotated[str | None, Query(max_length=1024, description="Actor id or name, or `system`")] = None,
    actor_type: Annotated[list[str] | None, Query(description="user, api_token, service, system")] = None,
    source: Annotated[list[str] | None, Query(description="Tool: console, api, cli, terraform, ...")] = None,
    project: Annotated[list[str] | None, Query()] = None,
    environment: Annotated[list[str] | None, Query()] = None,
    status: Annotated[list[int] | None, Query(description="HTTP status codes")] = None,
    ip: Annotated[str | None, Query(max_length=64, description="Client IP or CIDR (IPv4 or IPv6)")] = None,
    q: Annotated[
        str | None,
        Query(max_length=256, description="Case-insensitive text in target id/name, action, change"),
    ] = None,
    triggers: Annotated[
        bool,
        Query(description="Only triggers and webhooks: the actor is the system or the source a webhook"),
    ] = False,
) -> Filters:
    since, until = _utc(since), _utc(until)
    if since and until and since >= until:
        raise field_error("until", "must be after since")
    for s in status or []:
        if not 100 <= s <= 599:
            raise field_error("status", "HTTP status must be between 100 and 599")
    f = Filters(
        since=since,
        until=until,
        org=org or None,
        action=_nonempty("action", action),
        event_type=_nonempty("event_type", event_type),
        target_type=_nonempty("target_type", target_type),
        target_id=target_id or None,
        actor=actor or None,
        actor_type=_nonempty("actor_type", actor_type),
        source=_nonempty("source", source),
        project=_nonempty("project", project),
        environment=_nonempty("environment", environment),
        status=list(status or []),
        ip=ip or None,
        q=q or None,
        triggers=triggers,
    )
    if f.ip is not None:
        from services.query_api.query import ip_range

        try:
            ip_range(f.ip)
        except FilterError as e:
            raise field_error(e.field, e.msg) from None
    return f


FiltersDep = Annotated[Filters, Depends(event_filters)]


def ch_settings(settings: Settings) -> dict[str, Any]:
    """Per-query ClickHouse settings: a time limit and read-only."""
    return {"max_execution_time": int(settings.query_api.query_timeout_s), "readonly": 2}
