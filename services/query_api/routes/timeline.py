"""``/api/events/timeline``: how many events per time bucket, for the viewer's timeline.

Same filters, scope and de-duplication as the list; ClickHouse counts with one GROUP BY over a time
bucket (``toStartOfInterval``), parameterised like every other query. The bucket width is chosen from
round values so that the range fits in ``buckets`` bars; without a time filter the range is from the
first matching event to now.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from services.query_api import query as Q
from services.query_api.deps import ClientDep, EventViewer, FiltersDep, SettingsDep, ch_settings

router = APIRouter(prefix="/api/events", tags=["events"])


def _iso(v: datetime) -> str:
    return v.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@router.get("/timeline", summary="Events per time bucket for the filters (the viewer's timeline)")
def timeline(
    principal: EventViewer,
    settings: SettingsDep,
    client: ClientDep,
    filters: FiltersDep,
    buckets: Annotated[int, Query(ge=2, le=500, description="At most this many bars")] = 60,
) -> Response:
    dedup = Q.choose_dedup(settings.query_api.dedup, filters)
    db = settings.clickhouse_database
    now = datetime.now(UTC)
    until = filters.until or now
    since = filters.since
    if since is None:
        sql, params = Q.timeline_bounds_query(db, filters, principal.scope, dedup)
        first, _last, n = client.query(sql, parameters=params, settings=ch_settings(settings)).result_rows[0]
        if n:
            since = first if first.tzinfo is not None else first.replace(tzinfo=UTC)
        else:
            since = until - timedelta(days=1)
        if since >= until:
            since = until - timedelta(hours=1)
    step = Q.timeline_step(since, until, buckets)
    bounded = Q.Filters(**{**filters.__dict__, "since": since, "until": until})
    sql, params = Q.timeline_query(db, bounded, principal.scope, step, dedup)
    rows = client.query(sql, parameters=params, settings=ch_settings(settings)).result_rows
    series = Q.timeline_buckets(since, until, step, {t: int(n) for t, n in rows})
    body = {
        "since": _iso(since),
        "until": _iso(until),
        "interval_s": step,
        "total": sum(n for _, n in series),
        "buckets": [{"t": _iso(t), "count": n} for t, n in series],
    }
    return Response(orjson.dumps(body), media_type="application/json")
