"""Free text across orgs (0011 ``events_by_time``): the API answers from the time-sorted copy alone, so it
must answer exactly what the plain query on ``events`` answers — same events, same order, scope and every
other filter applied, never a duplicate (redeliveries, many copies of one event), nothing the archive job
deleted — and the sink's retried insert must reach both tables exactly once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.common.clickhouse import make_client
from services.common.migrations import migrate
from services.query_api import query as Q
from services.sink.rows import COLUMNS, row_from_event
from services.sink.writer import insert_records
from tests.conftest import unique
from tests.query_api.conftest import (
    NOW,
    TOKENS,
    archive_day,
    copy_and_events,
    database_before,
    make_event,
)
from tests.query_api.test_events import fetch_all

pytestmark = pytest.mark.clickhouse


def search_dataset() -> list:
    """Three orgs, projects/environments/actions/actors/IPs mixed; some text matches 'rollback'."""
    out = []
    for i in range(120):
        word = "Rollback" if i % 5 in (0, 4) else "deploy"
        out.append(
            make_event(
                i,
                occurred_at=NOW - timedelta(hours=i * 5 + (i % 4)),
                org_id=["org-acme", "org-other", "org-third"][i % 3],
                project_id=["proj-web", "proj-api"][(i // 3) % 2],
                environment_id=["env-production", "env-staging"][(i // 2) % 2],
                action=["deployment:create", "service:restart", "user:login"][(i // 3) % 3],
                actor={"type": "user", "id": f"u-{i % 4}", "name": f"User {i % 4}", "email": "u@x.test"},
                target={"type": "service", "id": f"worker-{4200 + i}", "name": f"svc {i}"},
                change=f"{word} of release 1.{i} (100% done_{i})",
                client_ip=f"198.51.100.{i % 7}",
            )
        )
    # two events at the same millisecond: the (occurred_at, event_id) tie-break must hold in both paths
    out.append(make_event(900, occurred_at=out[3].occurred_at, change="rollback twin"))
    return out


@pytest.fixture
def search_loaded(client, insert, api_settings):  # noqa: ANN001, ANN201
    db = api_settings.clickhouse_database
    ch = make_client(api_settings)
    for table in ("events", "events_by_time"):  # keep the copies apart for the test (no background merge)
        ch.command(f"SYSTEM STOP MERGES {db}.{table}")
    evs = search_dataset()
    insert(evs)
    insert(evs[:30])  # redelivery: the newest events again (in events and in events_by_time)
    # one event delivered 40 more times, kept as 40 rows (optimize_on_insert would collapse one block):
    # a page made of copies must make the route fetch more, never come out short
    ch.insert(
        f"{db}.events",
        [row_from_event(evs[0])] * 40,
        column_names=COLUMNS,
        settings={"insert_deduplicate": 0, "optimize_on_insert": 0},
    )
    assert (
        int(ch.command(f"SELECT count() FROM {db}.events_by_time WHERE event_id = '{evs[0].event_id}'")) == 42
    )
    return evs


@pytest.fixture
def time_table_calls(monkeypatch) -> list[int]:  # noqa: ANN001
    """Counts the route's queries on events_by_time (so a case proves which path answered)."""
    calls: list[int] = []
    real = Q.time_table_query

    def spy(*a: Any, **kw: Any) -> tuple[str, dict[str, Any]]:
        calls.append(a[4] if len(a) > 4 else kw["fetch"])
        return real(*a, **kw)

    monkeypatch.setattr(Q, "time_table_query", spy)
    return calls


def plain_ids(api_settings, token: str, params: dict) -> list[str]:  # noqa: ANN001
    """The same question through the plain query on events (FINAL; no side table), in page order."""
    kw = TOKENS[token][1]
    scope = Q.Scope(kw.get("org"), tuple(kw.get("projects", ())), tuple(kw.get("environments", ())))
    lst = lambda k: [params[k]] if k in params else []  # noqa: E731
    f = Q.Filters(
        q=params.get("q"),
        org=params.get("org"),
        action=lst("action"),
        project=lst("project"),
        actor=params.get("actor"),
        ip=params.get("ip"),
        since=Q.parse_time("since", params["since"]) if "since" in params else None,
        until=Q.parse_time("until", params["until"]) if "until" in params else None,
    )
    sort, order = params.get("sort", "occurred_at"), params.get("order", "desc")
    sql, p = Q.export_query(api_settings.clickhouse_database, f, scope, sort, order, ["event_id"], "final")
    assert Q.TIME_TABLE not in sql
    return [str(r[0]) for r in make_client(api_settings).query(sql, parameters=p).result_rows]


CASES = [
    ("viewer", {"q": "rollback"}, True),
    ("viewer", {"q": "ROLLBACK", "limit": 1}, True),  # case-insensitive; the 40 copies sit on page 1
    ("viewer", {"q": "rollback", "limit": 4, "order": "asc"}, True),
    ("viewer", {"q": "worker-42", "limit": 7}, True),  # spans a '-': 3-grams of the whole pattern
    ("viewer", {"q": "100% done_1", "limit": 3}, True),  # % and _ are literal characters
    ("viewer", {"q": "rollback", "action": "service:restart", "limit": 2}, True),
    ("viewer", {"q": "release", "actor": "User 1", "project": "proj-api", "limit": 5}, True),
    ("viewer", {"q": "rollback", "ip": "198.51.100.0/30", "limit": 3}, True),
    (
        "viewer",
        {
            "q": "release",
            "limit": 6,
            "since": (NOW - timedelta(days=10)).isoformat(),
            "until": NOW.isoformat(),
        },
        True,
    ),
    ("viewer", {"q": "of", "limit": 9}, True),  # shorter than a 3-gram: no index, still exact
    ("web_prod", {"q": "rollback", "limit": 2}, True),  # projects/environments scope without an org
    ("viewer", {"q": "rollback", "org": "org-other", "limit": 2}, False),  # an org: events' sort key
    ("acme", {"q": "rollback", "limit": 4}, False),
    ("viewer", {"q": "rollback", "sort": "action", "limit": 5}, False),  # other sorts: events
]


@pytest.mark.parametrize(
    ("token", "params", "via_time"), CASES, ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(CASES)]
)
def test_search_equals_plain_query(  # noqa: PLR0913
    client, search_loaded, api_settings, time_table_calls, token, params, via_time
) -> None:  # noqa: ANN001
    got = [e["event_id"] for e in fetch_all(client, token, **params)]
    want = plain_ids(api_settings, token, params)
    assert got == want
    assert len(got) == len(set(got))  # never a duplicate
    assert got, "a case that finds nothing proves nothing"
    assert bool(time_table_calls) == via_time


def test_copies_of_one_event_make_the_route_fetch_more(client, search_loaded, time_table_calls) -> None:  # noqa: ANN001
    """Page 1, limit 1: the 2 + 16 rows fetched are all copies of evs[0] -> the fetch grows, page full."""
    r = client.get(
        "/api/events",
        params={"q": "rollback", "limit": 1},
        headers={"Authorization": "Bearer viewer-token-0123456789"},
    )
    assert r.status_code == 200
    body = r.json()
    assert [e["event_id"] for e in body["events"]] == [str(search_loaded[0].event_id)]
    assert body["next_cursor"] is not None  # the second distinct event was found behind the copies
    assert time_table_calls[:2] == [2 + 16, (2 + 16) * 4]


def test_search_matches_python(client, search_loaded) -> None:  # noqa: ANN001
    got = fetch_all(client, "web_prod", q="ROLLBACK", limit=3)
    want = [
        e
        for e in search_loaded
        if "rollback" in f"{e.target.id} {e.target.name} {e.action} {e.change}".lower()
        and (e.project_id, e.environment_id) == ("proj-web", "env-production")
    ]
    want.sort(key=lambda e: (e.occurred_at, str(e.event_id)), reverse=True)
    assert [e["event_id"] for e in got] == [str(e.event_id) for e in want]
    assert len({e["org_id"] for e in got}) > 1  # across orgs


def test_time_table_is_written_with_every_insert(client, search_loaded, api_settings) -> None:  # noqa: ANN001
    cols = "toString(event_id), occurred_at, org_id, action, change, client_ip_v6"
    side, main = copy_and_events(api_settings, "events_by_time", cols)
    assert side == main and len(main) == len(search_loaded)


def test_archived_rows_leave_the_time_table_too(client, search_loaded, api_settings) -> None:  # noqa: ANN001
    """The archive job's delete removes an org-day from events_by_time as well: search never shows it."""
    db = api_settings.clickhouse_database
    ch = make_client(api_settings)
    for table in ("events", "events_by_time"):  # a synchronous delete waits for its mutation (a merge)
        ch.command(f"SYSTEM START MERGES {db}.{table}")
    newest = search_loaded[0]  # org-acme, matches 'rollback', delivered 42 times
    gone = archive_day(api_settings, newest.org_id, newest.occurred_at, search_loaded)
    assert str(newest.event_id) in gone
    left = ch.command(
        f"SELECT count() FROM {db}.events_by_time WHERE toString(event_id) IN {{g:Array(String)}}",
        parameters={"g": sorted(gone)},
    )
    assert int(left) == 0
    got = [e["event_id"] for e in fetch_all(client, q="rollback", limit=5)]
    assert got == plain_ids(api_settings, "viewer", {"q": "rollback"})
    assert got and not gone & set(got)


def test_sink_retry_reaches_events_and_every_view_once(api_settings) -> None:  # noqa: ANN001
    """The sink retries a batch with the same token: no table gets it twice (dependent-view dedup)."""
    db = api_settings.clickhouse_database
    ch = make_client(api_settings)
    evs = [make_event(5000 + i, change=f"retry probe {i}") for i in range(10)]
    records = [e.model_dump_json().encode() for e in evs]  # the sink sends the record bytes (0012)
    token = unique("retry-token")
    for _ in range(2):
        assert insert_records(ch, f"{db}.events_input", records, token) == (10, [])
    want = sorted(str(e.event_id) for e in evs)
    for table in ("events", "events_by_time", "events_by_target"):
        got = ch.query(
            f"SELECT toString(event_id) FROM {db}.{table} WHERE toString(event_id) IN {{w:Array(String)}}",
            parameters={"w": want},
        ).result_rows
        assert sorted(r[0] for r in got) == want, table


def test_migration_backfills_events_written_before_it(clickhouse_settings, tmp_path: Path) -> None:  # noqa: ANN001
    """0011 on a database that already holds events: the backfill copies them, search finds them."""
    evs = search_dataset()[:20]
    with database_before(clickhouse_settings, 11, tmp_path, evs) as (ch, db):
        assert [m.version for m in migrate(ch, db)][0] == 11
        got = ch.query(f"SELECT toString(event_id), change FROM {db}.events_by_time").result_rows
        assert sorted(got) == sorted((str(e.event_id), e.change) for e in evs)
        sql, p = Q.time_table_query(db, Q.Filters(q="rollback"), Q.Scope(), "desc", 100, None, ["event_id"])
        found = [str(r[0]) for r in ch.query(sql, parameters=p).result_rows]
        assert found == [
            str(e.event_id)
            for e in sorted(evs, key=lambda e: (e.occurred_at, str(e.event_id)), reverse=True)
            if "rollback" in e.change.lower()
        ]


def test_time_table_query_is_parameterised() -> None:
    f = Q.Filters(q="x' OR 1=1 --", since=NOW, action=["a'b"])
    sql, p = Q.time_table_query(
        "db",
        f,
        Q.Scope(projects=("p",)),
        "asc",
        67,
        [NOW, "00000000-0000-0000-0000-000000000000"],
        ["event_id"],
    )
    assert "x' OR" not in sql and "a'b" not in sql and p["fetch"] == 67 and p["q"] == "%x' or 1=1 --%"
    assert "FROM db.events_by_time" in sql and "ORDER BY occurred_at ASC, event_id ASC" in sql
    assert "LIMIT 1 BY" not in sql and "FINAL" not in sql  # both would stop the in-order early exit
    assert Q.use_time_table(Q.Filters(q="x"), Q.Scope(), "occurred_at")
    assert not Q.use_time_table(Q.Filters(q="x", org="o"), Q.Scope(), "occurred_at")
    assert not Q.use_time_table(Q.Filters(q="x"), Q.Scope(org="o"), "occurred_at")
    assert not Q.use_time_table(Q.Filters(q="x"), Q.Scope(), "actor")
    assert not Q.use_time_table(Q.Filters(), Q.Scope(), "occurred_at")
    rows = [{"event_id": i} for i in (1, 1, 2, 1, 3, 3)]
    assert Q.distinct_rows(rows) == [{"event_id": 1}, {"event_id": 2}, {"event_id": 3}]
