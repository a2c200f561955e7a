"""``/api/conflicts``: records the sink kept aside because their event id was already stored with other
content (first content wins; docs/sink.md). Managers only; read-only.

A conflict involves two organisations when a record claims another org's event id. A token scoped to one
org sees the conflicts where either side is its org, and of the other side only what tells the versions
apart (its content hash and when it was seen): never the other org's id, time or record.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, HTTPException, Query

from services.query_api.deps import ClientDep, ManagerPrincipal, SettingsDep, ch_settings, field_error

router = APIRouter(prefix="/api/conflicts", tags=["conflicts"])

_COLUMNS = (
    "toString(event_id)",
    "org_id",
    "occurred_at",
    "content_hash",
    "stored_org_id",
    "stored_occurred_at",
    "toString(stored_content_hash)",
    "stored_inserted_at",
    "record",
)


def _iso(v: datetime) -> str:
    v = v if v.tzinfo else v.replace(tzinfo=UTC)
    return v.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _cursor(row: tuple) -> str:
    seen, topic, partition, offset = row[:4]
    raw = orjson.dumps([_iso(seen), topic, partition, offset])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str, int, int]:
    try:
        seen, topic, partition, offset = orjson.loads(
            base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        )
        dt = datetime.fromisoformat(seen)
        if not (isinstance(topic, str) and isinstance(partition, int) and isinstance(offset, int)):
            raise ValueError
        return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)), topic, partition, offset
    except (ValueError, TypeError, orjson.JSONDecodeError):
        raise field_error("cursor", "malformed cursor") from None


def _utc(v: datetime | None) -> datetime | None:
    if v is None:
        return None
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


@router.get("", summary="Records kept aside: an event id already stored with other content (Manager)")
def list_conflicts(
    principal: ManagerPrincipal,
    settings: SettingsDep,
    client: ClientDep,
    org: Annotated[str | None, Query(max_length=256, description="Either side's organisation")] = None,
    event_id: Annotated[str | None, Query(max_length=64, description="One event id")] = None,
    since: Annotated[datetime | None, Query(description="seen at or after (RFC 3339; UTC if naive)")] = None,
    until: Annotated[datetime | None, Query(description="seen before")] = None,
    limit: Annotated[int | None, Query(ge=1, description="Page size (bounded by page_size_max)")] = None,
    cursor: Annotated[
        str | None, Query(max_length=1024, description="next_cursor of the previous page")
    ] = None,
) -> dict[str, Any]:
    if principal.restricted:
        # a forged record may name any project of the org: conflicts are a whole-org concern
        raise HTTPException(403, detail="conflicts need a token scoped to a whole organisation")
    cfg = settings.query_api
    size = limit or cfg.page_size_default
    if size > cfg.page_size_max:
        raise field_error("limit", f"must be at most {cfg.page_size_max}")
    since, until = _utc(since), _utc(until)
    if since and until and since >= until:
        raise field_error("until", "must be after since")
    conds: list[str] = []
    params: dict[str, Any] = {}
    scope = principal.scope.org
    if scope is not None:
        conds.append("(org_id = {scope:String} OR stored_org_id = {scope:String})")
        params["scope"] = scope
    if org:
        conds.append("(org_id = {org:String} OR stored_org_id = {org:String})")
        params["org"] = org
    if event_id is not None:
        try:
            params["eid"] = str(uuid.UUID(event_id))
        except ValueError:
            raise field_error("event_id", "not a UUID") from None
        conds.append("event_id = {eid:UUID}")
    having: list[str] = []
    if since is not None:
        having.append("seen >= {since:DateTime64(3, 'UTC')}")
        params["since"] = since
    if until is not None:
        having.append("seen < {until:DateTime64(3, 'UTC')}")
        params["until"] = until
    if cursor:
        c_seen, c_topic, c_part, c_off = _decode_cursor(cursor)
        having.append(
            "(seen, topic, partition, offset) < "
            "({c_seen:DateTime64(3, 'UTC')}, {c_topic:String}, {c_part:UInt32}, {c_off:UInt64})"
        )
        params.update(c_seen=c_seen, c_topic=c_topic, c_part=c_part, c_off=c_off)
    db = settings.clickhouse_database
    # one row per Kafka record (a batch re-read after a crash may have written it twice): the first sighting
    cols = ", ".join(f"argMin({c}, seen_at)" for c in _COLUMNS)
    sql = (
        f"SELECT min(seen_at) AS seen, topic, partition, offset, {cols} "  # noqa: S608 - constants and db
        f"FROM {db}.event_conflicts {'WHERE ' + ' AND '.join(conds) if conds else ''} "
        f"GROUP BY topic, partition, offset {'HAVING ' + ' AND '.join(having) if having else ''} "
        f"ORDER BY seen DESC, topic DESC, partition DESC, offset DESC LIMIT {int(size) + 1}"
    )
    rows = client.query(sql, parameters=params, settings=ch_settings(settings)).result_rows
    out = [_conflict(r, scope) for r in rows[:size]]
    return {"conflicts": out, "next_cursor": _cursor(rows[size - 1]) if len(rows) > size else None}


def _conflict(r: tuple, scope: str | None) -> dict[str, Any]:
    seen, topic, partition, offset, eid, org, occ, h, s_org, s_occ, s_h, s_ins, record = r
    mine, theirs = scope is None or org == scope, scope is None or s_org == scope
    return {
        "event_id": eid,
        "seen_at": _iso(seen),
        "source": {"topic": topic, "partition": partition, "offset": offset},
        "record": {
            "org_id": org if mine else None,
            "occurred_at": _iso(occ) if mine else None,
            "content_hash": h,
            "record": record if mine else None,  # the bytes as read from Kafka (JSON text)
        },
        "stored": {
            "org_id": s_org if theirs else None,
            "occurred_at": _iso(s_occ) if theirs else None,
            "content_hash": s_h,
            "inserted_at": _iso(s_ins) if theirs else None,
        },
    }
