"""The target-id path (0010 ``events_by_target``): the API must answer exactly what the plain query on
``events`` answers — same events, same order, scope applied, no duplicate — including after rows were
deleted from ``events`` only (archives/retention leave stale keys in the side table)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from services.common.clickhouse import make_client
from services.common.migrations import migrate
from services.query_api import query as Q
from tests.query_api.conftest import NOW, TOKENS, archive_day, copy_and_events, database_before, make_event
from tests.query_api.test_events import fetch_all

pytestmark = pytest.mark.clickhouse

TARGET = "svc-shared"


def target_dataset() -> list:
    """One target id in two orgs, several projects/environments/actions, mixed with other targets."""
    out = []
    for i in range(90):
        mine = i % 3 != 2
        out.append(
            make_event(
                i,
                occurred_at=NOW - timedelta(hours=i * 7 + (i % 4)),
                org_id="org-acme" if i % 5 else "org-other",
                project_id=["proj-web", "proj-api"][i % 2],
                environment_id=["env-production", "env-staging"][(i // 2) % 2],
                action=["service:update", "service:restart", "deployment:create"][(i // 3) % 3],
                target={"type": "service", "id": TARGET if mine else f"svc-{i}", "name": f"service {i}"},
            )
        )
    # two events at the same millisecond: the (occurred_at, event_id) tie-break must hold in both paths
    out.append(make_event(900, occurred_at=out[3].occurred_at, target={"type": "service", "id": TARGET}))
    return out


@pytest.fixture
def target_loaded(client, insert):  # noqa: ANN001, ANN201
    evs = target_dataset()
    insert(evs)
    insert(evs[:25])  # redelivery: same rows again in events (and in the side table)
    return evs


def plain_ids(api_settings, token: str, params: dict) -> list[str]:  # noqa: ANN001
    """The same question through the plain query on events (no side table), in page order."""
    kw = TOKENS[token][1]
    scope = Q.Scope(kw.get("org"), tuple(kw.get("projects", ())), tuple(kw.get("environments", ())))
    f = Q.Filters(
        target_id=params.get("target_id"),
        org=params.get("org"),
        action=[params["action"]] if "action" in params else [],
        since=Q.parse_time("since", params["since"]) if "since" in params else None,
        until=Q.parse_time("until", params["until"]) if "until" in params else None,
    )
    sort, order = params.get("sort", "occurred_at"), params.get("order", "desc")
    sql, p = Q.export_query(api_settings.clickhouse_database, f, scope, sort, order, ["event_id"], "final")
    assert "events_by_target" not in sql
    return [str(r[0]) for r in make_client(api_settings).query(sql, parameters=p).result_rows]


CASES = [
    ("viewer", {}),
    ("viewer", {"limit": 1}),
    ("viewer", {"limit": 4, "order": "asc"}),
    (
        "viewer",
        {"limit": 3, "action": "deployment:create"},
    ),  # most candidates filtered out: windows fall through
    ("viewer", {"limit": 5, "sort": "action"}),
    ("viewer", {"limit": 5, "sort": "actor", "order": "asc"}),
    ("viewer", {"limit": 2, "org": "org-other"}),
    ("viewer", {"limit": 6, "since": (NOW - timedelta(days=10)).isoformat(), "until": NOW.isoformat()}),
    ("acme", {"limit": 4}),
    ("acme_web_prod", {"limit": 2}),  # project + environment scope: only on events, never in the side table
    ("acme_web_prod", {"limit": 2, "order": "asc", "action": "service:restart"}),
]


@pytest.mark.parametrize(("token", "params"), CASES, ids=[f"{t}-{i}" for i, (t, _) in enumerate(CASES)])
def test_target_path_equals_plain_query(client, target_loaded, api_settings, token, params) -> None:  # noqa: ANN001
    params = dict(params, target_id=TARGET)
    got = [e["event_id"] for e in fetch_all(client, token, **params)]
    want = plain_ids(api_settings, token, params)
    assert got == want
    assert len(got) == len(set(got))  # never a duplicate
    assert got, "a case that finds nothing proves nothing"


def test_target_path_matches_python_with_scope(client, target_loaded) -> None:  # noqa: ANN001
    got = fetch_all(client, "acme_web_prod", target_id=TARGET, limit=3)
    want = [
        e
        for e in target_loaded
        if e.target.id == TARGET
        and (e.org_id, e.project_id, e.environment_id) == ("org-acme", "proj-web", "env-production")
    ]
    want.sort(key=lambda e: (e.occurred_at, str(e.event_id)), reverse=True)
    assert [e["event_id"] for e in got] == [str(e.event_id) for e in want]
    assert all(e["target_id"] == TARGET for e in got)


def test_side_table_is_written_with_every_insert(client, target_loaded, api_settings) -> None:  # noqa: ANN001
    side, main = copy_and_events(api_settings, "events_by_target", "org_id, occurred_at, event_id")
    assert side == main and len(main) == len(target_loaded)


def test_rows_deleted_from_events_only_leave_harmless_side_keys(client, target_loaded, api_settings) -> None:  # noqa: ANN001
    """The archive job deletes an org-day from events (not from the side table): answers stay exact."""
    db = api_settings.clickhouse_database
    ch = make_client(api_settings)
    newest = max(
        (e for e in target_loaded if e.target.id == TARGET and e.org_id == "org-acme"),
        key=lambda e: e.occurred_at,
    )
    gone = archive_day(api_settings, "org-acme", newest.occurred_at, target_loaded)
    assert gone and str(newest.event_id) in gone
    stale = ch.command(
        f"SELECT count() FROM {db}.events_by_target WHERE toString(event_id) IN {{g:Array(String)}}",
        parameters={"g": sorted(gone)},
    )
    assert int(stale) >= len(gone)  # the side table still holds the deleted keys
    for token, extra in (
        ("viewer", {"limit": 1}),
        ("acme", {"limit": 2}),
        ("viewer", {"limit": 3, "order": "asc"}),
    ):
        params_q = dict(extra, target_id=TARGET)
        got = [e["event_id"] for e in fetch_all(client, token, **params_q)]
        assert got == plain_ids(api_settings, token, params_q)
        assert not gone & set(got)


def test_migration_backfills_events_written_before_it(clickhouse_settings, tmp_path: Path) -> None:  # noqa: ANN001
    """0010 on a database that already holds events: the backfill copies their keys."""
    evs = target_dataset()[:20]
    with database_before(clickhouse_settings, 10, tmp_path, evs) as (ch, db):
        assert [m.version for m in migrate(ch, db)][0] == 10
        keys = ch.query(f"SELECT toString(event_id), target_id FROM {db}.events_by_target").result_rows
        assert sorted(keys) == sorted((str(e.event_id), e.target.id) for e in evs)


def test_target_windows_and_condition_are_parameterised() -> None:
    f = Q.Filters(target_id="x' OR 1=1 --", org="o", since=NOW)
    assert Q.target_windows(f, "occurred_at", 51) == [51, 51 * 16, None]
    assert Q.target_windows(f, "action", 51) == [None]
    assert Q.target_windows(Q.Filters(), "occurred_at", 51) == []
    # candidate count known: windows that would already hold every key are skipped
    assert Q.target_windows(f, "occurred_at", 51, 0) == [None]
    assert Q.target_windows(f, "occurred_at", 51, 51) == [None]
    assert Q.target_windows(f, "occurred_at", 51, 52) == [51, None]
    assert Q.target_windows(f, "occurred_at", 51, 816) == [51, None]
    assert Q.target_windows(f, "occurred_at", 51, 817) == [51, 816, None]
    cq, cp = Q.target_count_query("db", f, Q.Scope(), "asc", None, 817)
    assert "x' OR" not in cq and cp["target_id"] == f.target_id and cp["target_cap"] == 817
    sql, p = Q.target_condition(
        "db", f, Q.Scope(org="s"), "desc", [NOW, "00000000-0000-0000-0000-000000000000"], 51
    )
    assert "x' OR" not in sql and p["target_id"] == f.target_id and p["target_window"] == 51
    assert "{scope_org:String}" in sql and "{org:String}" in sql and "{k1:UUID}" in sql
    sql_all, p_all = Q.target_condition("db", f, Q.Scope(), "desc", None, None)
    assert "LIMIT" not in sql_all and "target_window" not in p_all


def test_unknown_target_finds_nothing(client, target_loaded) -> None:  # noqa: ANN001
    assert fetch_all(client, target_id="svc-none") == []
    assert fetch_all(client, target_id="svc-none", sort="action") == []
    assert [e["event_id"] for e in fetch_all(client, target_id="svc-1")] == [
        str(e.event_id) for e in target_loaded if e.target.id == "svc-1"
    ]
