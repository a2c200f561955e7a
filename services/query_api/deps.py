"""What handlers declare in their signatures (FastAPI-template style ``Annotated`` aliases)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

from clickhouse_connect.driver.client import Client
from fastapi import Depends, HTTPException, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from services.common.audit_events import AuditPublisher
from services.common.settings import Settings
from services.query_api.auth import Principal, authenticate
from services.query_api.query import FilterError, Filters

_bearer = HTTPBearer(auto_error=False, description="A query-API token (see QueryApiSettings.tokens)")


class ErrorBody(BaseModel):
    """Every error answer names the problem: ``detail`` (FastAPI's shape: a text, or for 422 a list of
    ``{loc, msg, type}`` naming the field) and/or ``error`` (a code: overloaded, deadline,
    too_many_exports)."""

    detail: str | list[dict[str, Any]] | None = Field(default=None, description="What went wrong")
    error: str | None = Field(default=None, description="Machine-readable code")
    message: str | None = None
    retry_after_s: int | None = Field(default=None, description="Also in the Retry-After header")
    limit: int | None = None


def _err(text: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": text}


# The error answers every /api route may give (the OpenAPI document lists them; the fuzz tests hold the
# app to it).
API_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _err("The body is not valid JSON"),
    401: _err("Missing or unknown bearer token (WWW-Authenticate: Bearer)"),
    403: _err("The token lacks the role or the scope"),
    404: _err("Not found, or outside the token's scope"),
    422: _err("A parameter or the body is invalid; detail names it"),
    503: _err("Overloaded or past the request deadline (Retry-After), or the audit log is unavailable"),
}


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


def known_query_params(request: Request, _principal: CurrentPrincipal) -> None:
    """422 naming the first query parameter the route does not take: a misspelt filter (``orgg=``) must
    not silently widen a search or an export to everything the token may read."""
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None:
        return
    allowed, repeatable = _query_names(dependant)
    for name in request.query_params:
        if name not in allowed:
            raise field_error(name, "unknown query parameter")
        if name not in repeatable and len(request.query_params.getlist(name)) > 1:
            raise field_error(name, "given more than once; this parameter takes one value")


# id -> (dependant kept alive, every query parameter name, those that take a list)
_QUERY_NAMES: dict[int, tuple[Any, frozenset[str], frozenset[str]]] = {}


def _query_names(dependant: Any) -> tuple[frozenset[str], frozenset[str]]:
    """The query parameters a route and its dependencies declare, and which of them are lists
    (computed once per route)."""
    hit = _QUERY_NAMES.get(id(dependant))
    if hit is None:
        names: set[str] = set()
        lists: set[str] = set()
        todo = [dependant]
        while todo:
            d = todo.pop()
            for p in d.query_params:
                names.add(p.alias)
                if "list[" in str(p.field_info.annotation):
                    lists.add(p.alias)
            todo.extend(d.dependencies)
        hit = _QUERY_NAMES[id(dependant)] = (dependant, frozenset(names), frozenset(lists))
    return hit[1], hit[2]


def event_viewer(p: CurrentPrincipal) -> Principal:
    if not ({"EventView", "Manager"} & p.roles):
        raise HTTPException(403, detail="requires the EventView role")
    return p


def manager(p: CurrentPrincipal) -> Principal:
    if not p.is_manager:
        raise HTTPException(403, detail="requires the Manager role")
    return p


def org_manager(p: Annotated[Principal, Depends(manager)]) -> Principal:
    """A Manager whose token covers whole organisations: retention and the audit switch act on every
    project and environment of an org, so a project- or environment-scoped Manager may not change them."""
    if p.restricted:
        raise HTTPException(
            403, detail="requires a Manager token for a whole organisation (no project scope)"
        )
    return p


EventViewer = Annotated[Principal, Depends(event_viewer)]
ManagerPrincipal = Annotated[Principal, Depends(manager)]
OrgManager = Annotated[Principal, Depends(org_manager)]


def request_info(request: Request) -> dict[str, Any]:
    """The request as the audit event of a sensitive action records it (every query value kept)."""
    query: dict[str, Any] = {}
    for k, v in request.query_params.multi_items():
        if k not in query:
            query[k] = v
        elif isinstance(query[k], list):
            query[k].append(v)
        else:
            query[k] = [query[k], v]
    return {
        "method": request.method,
        "path": request.url.path,
        "query": query,
        "peer_ip": request.client.host if request.client else None,
        "user_agent": request.headers.get("user-agent"),
    }


# The range of ClickHouse's DateTime64: a time outside it is a bad request, not a server error.
TIME_MIN = datetime(1900, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2299, 12, 31, 23, 59, 59, tzinfo=UTC)


def utc_param(field: str, v: datetime | None) -> datetime | None:
    """A time query parameter in UTC (naive = UTC); 422 naming ``field`` outside ClickHouse's range."""
    if v is None:
        return None
    try:
        u = v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)
    except OverflowError:  # e.g. year 1 with a positive UTC offset
        raise field_error(field, "time out of range") from None
    if not TIME_MIN <= u <= TIME_MAX:
        raise field_error(field, "must be between 1900-01-01 and 2299-12-31 (UTC)")
    return u


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
    since, until = utc_param("since", since), utc_param("until", until)
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
