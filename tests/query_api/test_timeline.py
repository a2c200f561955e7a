"""The timeline (events per time bucket) and the triggers filter, against the real ClickHouse; the bucket
arithmetic as pure functions with hypothesis."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.query_api import query as Q
from tests.query_api.conftest import NOW, auth, make_event

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@given(
    start=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    span_s=st.floats(min_value=0.001, max_value=400 * 86400),
    buckets=st.integers(min_value=2, max_value=500),
)
def test_buckets_cover_the_range_contiguously(start: datetime, span_s: float, buckets: int) -> None:
    since = start.replace(tzinfo=UTC)
    until = since + timedelta(seconds=span_s)
    step = Q.timeline_step(since, until, buckets)
    series = Q.timeline_buckets(since, until, step, {})
    assert step in Q.TIMELINE_STEPS
    assert series[0][0] <= since and series[-1][0] + timedelta(seconds=step) >= until
    assert all(b[0] - a[0] == timedelta(seconds=step) for a, b in zip(series, series[1:], strict=False))
    assert all(int((t - EPOCH).total_seconds()) % step == 0 for t, _ in series)  # ClickHouse's alignment
    if step != Q.TIMELINE_STEPS[-1]:
        assert len(series) <= buckets + 1
    smaller = [s for s in Q.TIMELINE_STEPS if s < step]
    if smaller:  # the finest round width that fits
        assert max(1.0, span_s) / smaller[-1] > buckets


def test_counts_land_in_their_bucket() -> None:
    since = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
    series = Q.timeline_buckets(since, since + timedelta(hours=3), 3600, {since + timedelta(hours=1): 7})
    assert [n for _, n in series] == [0, 7, 0]


@pytest.mark.clickhouse
def test_timeline_counts_per_bucket_with_filters_scope_and_duplicates(client, insert) -> None:  # noqa: ANN001
    base = NOW.replace(minute=0, second=0) - timedelta(hours=6)
    evs = []
    for i in range(36):  # 6 hours, 6 events an hour, every third one a variable update in org-beta
        beta = i % 3 == 0
        evs.append(
            make_event(
                i,
                occurred_at=base + timedelta(minutes=10 * i + 1),
                org_id="org-beta" if beta else "org-acme",
                action="variable:update" if beta else "deployment:create",
            )
        )
    insert(evs)
    insert(evs[:5])  # redelivered copies: counted once
    since, until = base.isoformat(), (base + timedelta(hours=6)).isoformat()

    r = client.get(
        "/api/events/timeline", params={"since": since, "until": until, "buckets": 6}, headers=auth("viewer")
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["interval_s"] == 3600 and body["total"] == 36
    assert [b["count"] for b in body["buckets"]] == [6] * 6
    assert body["buckets"][0]["t"].startswith(base.strftime("%Y-%m-%dT%H:00:00"))

    # filters apply; the scope of an org-bound token too
    r = client.get(
        "/api/events/timeline",
        params={"since": since, "until": until, "buckets": 6, "action": "variable:update"},
        headers=auth("viewer"),
    )
    assert [b["count"] for b in r.json()["buckets"]] == [2] * 6
    r = client.get(
        "/api/events/timeline", params={"since": since, "until": until, "buckets": 6}, headers=auth("acme")
    )
    assert r.json()["total"] == 24

    # finer buckets: counts per 10 minutes (one event each) match the events' own times
    r = client.get(
        "/api/events/timeline", params={"since": since, "until": until, "buckets": 40}, headers=auth("viewer")
    )
    body = r.json()
    assert body["interval_s"] == 600
    want = Counter((int((e.occurred_at - EPOCH).total_seconds()) // 600) * 600 for e in evs)
    got = {
        int(datetime.fromisoformat(b["t"].replace("Z", "+00:00")).timestamp()): b["count"]
        for b in body["buckets"]
    }
    assert {k: v for k, v in got.items() if v} == dict(want)

    # no time filter: from the first matching event to now
    r = client.get("/api/events/timeline", headers=auth("viewer"))
    body = r.json()
    first = datetime.fromisoformat(body["since"].replace("Z", "+00:00"))
    assert body["total"] == 36 and first == evs[0].occurred_at


@pytest.mark.clickhouse
def test_timeline_refuses_bad_input_and_anonymous(client) -> None:  # noqa: ANN001
    assert client.get("/api/events/timeline").status_code == 401
    r = client.get("/api/events/timeline", params={"buckets": 1}, headers=auth("viewer"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "buckets"
    r = client.get("/api/events/timeline", params={"since": "yesterday"}, headers=auth("viewer"))
    assert r.status_code == 422
    assert client.get("/api/events/timeline", headers=auth("norole")).status_code == 403


@pytest.mark.clickhouse
def test_triggers_filter_keeps_system_and_webhook_events(client, insert) -> None:  # noqa: ANN001
    evs = [
        make_event(
            0, actor={"type": "system", "name": "system"}, source="system", action="certificate:renew"
        ),
        make_event(1, actor={"type": "system", "name": "system"}, source="webhook", action="service:update"),
        make_event(2, source="webhook", action="deployment:create"),  # a person's token, via a webhook
        make_event(3, source="console"),
        make_event(4, source="api", actor={"type": "api_token", "id": "tok-ci", "name": "ci"}),
    ]
    insert(evs)
    r = client.get("/api/events", params={"triggers": "true"}, headers=auth("viewer"))
    got = {e["event_id"] for e in r.json()["events"]}
    assert got == {str(e.event_id) for e in evs[:3]}
    r = client.get("/api/events/facets", params={"triggers": "true"}, headers=auth("viewer"))
    assert r.json()["total"] == 3
    r = client.get("/api/events", params={"triggers": "false"}, headers=auth("viewer"))
    assert len(r.json()["events"]) == 5
