"""GET /api/events and friends against the real ClickHouse: every filter, every sort, keyset paging while
events keep arriving, details, facets, export content, validation errors naming the field."""

from __future__ import annotations

import csv
import io
import random
from datetime import timedelta

import orjson
import pytest

from tests.query_api.conftest import NOW, auth, make_event

pytestmark = pytest.mark.clickhouse


def dataset() -> list:
    """A varied set: two orgs, projects, environments, actor kinds, sources, statuses, IPs (v4, v6)."""
    rnd = random.Random(7)
    actions = [
        ("deployment:create", "create", "deployment"),
        ("environment:update", "update", "environment"),
        ("variable:update", "update", "variable"),
        ("user:login", "login", "user"),
    ]
    actors = [
        {"type": "user", "id": "u-42", "name": "Ada Lovelace"},
        {"type": "user", "id": "u-7", "name": "Grace Hopper"},
        {"type": "api_token", "id": "tok-1", "name": "ci deploy"},
        {"type": "system", "id": None, "name": None},
    ]
    ips = ["203.0.113.7", "203.0.113.200", "198.51.100.9", "2001:db8::5", None]
    out = []
    for i in range(120):
        action, etype, ttype = actions[i % 4]
        out.append(
            make_event(
                i,
                occurred_at=NOW - timedelta(hours=i),
                org_id="org-acme" if i % 5 else "org-other",
                project_id=["proj-web", "proj-api"][i % 2],
                environment_id=["env-production", "env-staging", "env-dev"][i % 3],
                actor=actors[i % 4 if i % 7 else 3],
                action=action,
                event_type=etype,
                target={"type": ttype, "id": f"{ttype}-{i % 10}", "name": f"{ttype} Number{i % 10}"},
                source=rnd.choice(["console", "api", "terraform"]),
                status=[200, 201, 403, 500][i % 4],
                change=f"Changed {ttype} SETTING_{i}",
                client_ip=ips[i % 5],
            )
        )
    return out


def fetch_all(client, token: str = "viewer", **params) -> list[dict]:  # noqa: ANN001
    """Every page of a listing, following next_cursor."""
    out: list[dict] = []
    cursor = None
    for _ in range(1000):
        p = dict(params, **({"cursor": cursor} if cursor else {}))
        r = client.get("/api/events", params=p, headers=auth(token))
        assert r.status_code == 200, r.text
        body = r.json()
        out += body["events"]
        cursor = body["next_cursor"]
        if not cursor:
            return out
    raise AssertionError("paging did not end")


def ids(rows: list) -> set[str]:
    return {str(r["event_id"]) if isinstance(r, dict) else str(r.event_id) for r in rows}


@pytest.fixture
def loaded(client, insert):  # noqa: ANN001, ANN201
    evs = dataset()
    insert(evs)
    insert(evs[:30])  # at-least-once redelivery: the same events again, must not show twice
    return evs


def test_every_filter_matches_python(client, loaded) -> None:  # noqa: ANN001
    import ipaddress

    evs = loaded

    def in_net(ip: str | None, net: str) -> bool:
        if not ip:
            return False
        a, n = ipaddress.ip_address(ip), ipaddress.ip_network(net)
        return a.version == n.version and a in n

    def text_has(e, q: str) -> bool:  # noqa: ANN001
        return q in f"{e.target.id} {e.target.name} {e.action} {e.change}".lower()

    cases = {
        "no filter": ({}, lambda e: True),
        "since/until": (
            {
                "since": (NOW - timedelta(hours=10)).isoformat(),
                "until": (NOW - timedelta(hours=2)).isoformat(),
            },
            lambda e: NOW - timedelta(hours=10) <= e.occurred_at < NOW - timedelta(hours=2),
        ),
        "org": ({"org": "org-other"}, lambda e: e.org_id == "org-other"),
        "one action": ({"action": "user:login"}, lambda e: e.action == "user:login"),
        "many actions": (
            {"action": ["user:login", "variable:update"]},
            lambda e: e.action in ("user:login", "variable:update"),
        ),
        "event_type": ({"event_type": "update"}, lambda e: e.event_type == "update"),
        "target_type": ({"target_type": "environment"}, lambda e: e.target.type == "environment"),
        "target_id": ({"target_id": "variable-2"}, lambda e: e.target.id == "variable-2"),
        "actor id": ({"actor": "u-7"}, lambda e: e.actor.id == "u-7"),
        "actor name": ({"actor": "Ada Lovelace"}, lambda e: e.actor.name == "Ada Lovelace"),
        "actor system": ({"actor": "system"}, lambda e: e.actor.type.value == "system"),
        "actor_type": ({"actor_type": "api_token"}, lambda e: e.actor.type.value == "api_token"),
        "source": ({"source": ["api", "terraform"]}, lambda e: e.source in ("api", "terraform")),
        "project": ({"project": "proj-api"}, lambda e: e.project_id == "proj-api"),
        "environment": ({"environment": "env-dev"}, lambda e: e.environment_id == "env-dev"),
        "status": ({"status": [403, 500]}, lambda e: e.status in (403, 500)),
        "ip exact": ({"ip": "203.0.113.7"}, lambda e: e.client_ip == "203.0.113.7"),
        "ip v4 cidr": ({"ip": "203.0.113.0/24"}, lambda e: in_net(e.client_ip, "203.0.113.0/24")),
        "ip v6 cidr": ({"ip": "2001:db8::/32"}, lambda e: in_net(e.client_ip, "2001:db8::/32")),
        "q target name, any case": ({"q": "number3"}, lambda e: text_has(e, "number3")),
        "q target id": ({"q": "VARIABLE-2"}, lambda e: text_has(e, "variable-2")),
        "q action": ({"q": "login"}, lambda e: text_has(e, "login")),
        "q change": ({"q": "setting_11"}, lambda e: text_has(e, "setting_11")),
        "q wildcard is literal": ({"q": "%"}, lambda e: False),
        "combined": (
            {
                "org": "org-acme",
                "action": "deployment:create",
                "environment": "env-production",
                "status": 200,
            },
            lambda e: (
                e.org_id == "org-acme"
                and e.action == "deployment:create"
                and e.environment_id == "env-production"
                and e.status == 200
            ),
        ),
    }
    for name, (params, pred) in cases.items():
        got = fetch_all(client, limit=37, **params)
        expected = {str(e.event_id) for e in evs if pred(e)}
        assert len(got) == len(ids(got)), f"{name}: duplicate rows"
        assert ids(got) == expected, f"{name}: {len(ids(got))} rows, expected {len(expected)}"
        if name not in ("no filter", "q wildcard is literal"):
            assert expected, f"{name}: the dataset must exercise the filter"


def test_every_sort_pages_in_order(client, loaded) -> None:  # noqa: ANN001
    col = {
        "occurred_at": "occurred_at",
        "action": "action",
        "target_type": "target_type",
        "actor": "actor_name",
    }
    for sort in col:
        for order in ("asc", "desc"):
            got = fetch_all(client, sort=sort, order=order, limit=13)
            assert len(got) == len(ids(got)) == len(loaded), (sort, order)
            keys = [(r[col[sort]], r["occurred_at"]) for r in got]
            assert keys == sorted(keys, reverse=order == "desc"), (sort, order)


def test_default_sort_is_newest_first(client, loaded) -> None:  # noqa: ANN001
    r = client.get("/api/events", params={"limit": 5}, headers=auth("viewer")).json()
    times = [e["occurred_at"] for e in r["events"]]
    assert times == sorted(times, reverse=True)
    assert r["events"][0]["event_id"] == str(loaded[0].event_id)


def test_cursor_paging_no_duplicate_no_skip_while_events_arrive(client, insert) -> None:  # noqa: ANN001
    rnd = random.Random(3)
    base = [make_event(i, occurred_at=NOW - timedelta(minutes=i)) for i in range(300)]
    insert(base)
    seen: list[str] = []
    cursor = None
    k = 1000
    for _page in range(100):
        r = client.get(
            "/api/events",
            params={"limit": 25, **({"cursor": cursor} if cursor else {})},
            headers=auth("viewer"),
        )
        assert r.status_code == 200
        body = r.json()
        seen += [e["event_id"] for e in body["events"]]
        # meanwhile: newer events, events inside the range already paged and still to page, and
        # redeliveries of base events (same event_id) arrive
        fresh = [
            make_event(k + j, occurred_at=NOW - timedelta(seconds=rnd.randint(-600, 300 * 60)))
            for j in range(8)
        ]
        k += 8
        insert(fresh + rnd.sample(base, 5))
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert len(seen) == len(set(seen)), "an event was shown twice"
    assert {str(e.event_id) for e in base} <= set(seen), "an event that existed before paging was skipped"


def test_page_size_limit(client, loaded, api_settings) -> None:  # noqa: ANN001
    r = client.get("/api/events", headers=auth("viewer")).json()
    assert len(r["events"]) == api_settings.query_api.page_size_default
    r = client.get(
        "/api/events", params={"limit": api_settings.query_api.page_size_max + 1}, headers=auth("viewer")
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["query", "limit"]


def test_details_are_the_whole_event(client, loaded) -> None:  # noqa: ANN001
    ev = loaded[1]
    r = client.get(f"/api/events/{ev.event_id}", headers=auth("viewer"))
    assert r.status_code == 200
    body = r.json()
    assert body["event_id"] == str(ev.event_id)
    assert body["request"]["payload"] == ev.request.payload
    assert body["request"]["path"] == ev.request.path and body["request"]["query"] == {"dry_run": "false"}
    assert body["changes"][0]["field"] == "release" and body["snapshot"]["id"] == ev.snapshot["id"]


def test_facets_count_per_dimension(client, loaded) -> None:  # noqa: ANN001
    r = client.get("/api/events/facets", params={"org": "org-acme"}, headers=auth("viewer"))
    assert r.status_code == 200
    body = r.json()
    acme = [e for e in loaded if e.org_id == "org-acme"]
    assert body["total"] == len(acme)
    got = {x["value"]: x["count"] for x in body["facets"]["action"]}
    assert got == {a: sum(1 for e in acme if e.action == a) for a in {e.action for e in acme}}
    src = {x["value"]: x["count"] for x in body["facets"]["source"]}
    assert sum(src.values()) == len(acme)
    assert {x["value"] for x in body["facets"]["target_type"]} == {e.target.type for e in acme}
    assert any(x["value"] == "Grace Hopper" for x in body["facets"]["actor"])


def test_export_csv_and_jsonl_include_payload_and_request(client, loaded) -> None:  # noqa: ANN001
    r = client.get("/api/events/export", params={"format": "csv", "org": "org-other"}, headers=auth("viewer"))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    other = {str(e.event_id): e for e in loaded if e.org_id == "org-other"}
    assert {x["event_id"] for x in rows} == set(other) and len(rows) == len(other)
    one = rows[0]
    ev = other[one["event_id"]]
    assert orjson.loads(one["request_payload"]) == ev.request.payload
    assert orjson.loads(one["request_query"]) == ev.request.query and one["request_path"] == ev.request.path
    r = client.get(
        "/api/events/export", params={"format": "jsonl", "action": "user:login"}, headers=auth("viewer")
    )
    lines = [orjson.loads(x) for x in r.text.splitlines()]
    assert {x["event_id"] for x in lines} == {str(e.event_id) for e in loaded if e.action == "user:login"}
    assert all("payload" in x["request"] for x in lines)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"sort": "event_json"}, "sort"),
        ({"order": "sideways"}, "order"),
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "until"),
        ({"ip": "300.1.1.1"}, "ip"),
        ({"ip": "10.0.0.0/40"}, "ip"),
        ({"status": 999}, "status"),
        ({"status": "ok"}, "status"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"q": "x" * 300}, "q"),
    ],
)
def test_bad_values_are_422_naming_the_field(plain_client, params: dict, field: str) -> None:  # noqa: ANN001
    r = plain_client.get("/api/events", params=params, headers=auth("viewer"))
    assert r.status_code == 422, r.text
    assert any(field in d["loc"] for d in r.json()["detail"]), r.text


def test_cursor_of_another_sort_is_refused(client, loaded) -> None:  # noqa: ANN001
    c = client.get("/api/events", params={"limit": 3}, headers=auth("viewer")).json()["next_cursor"]
    r = client.get("/api/events", params={"limit": 3, "cursor": c, "sort": "action"}, headers=auth("viewer"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "cursor"]
    r = client.get("/api/events/export", params={"format": "xml"}, headers=auth("viewer"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "format"


def test_probe_windows_grow_and_end_with_the_whole_query() -> None:
    from services.query_api.query import Filters, probe_windows

    f = Filters(q="x", since=NOW - timedelta(days=30))
    ws = probe_windows(f, NOW)
    assert ws[-1] is f
    lows = [w.since for w in ws[:-1]]
    assert lows == sorted(lows, reverse=True) and all(lo > f.since for lo in lows)
    assert lows[0] == NOW - timedelta(hours=1)
    assert probe_windows(Filters(), NOW)[-1] == Filters()


@pytest.mark.parametrize("token", ["acme", "viewer"])  # one org: probe windows on events; all: events_by_time
def test_search_newest_first_pages_across_probe_windows(client, insert, token) -> None:  # noqa: ANN001
    # matches spread from minutes to weeks ago: pages must come out complete and in order
    evs = [make_event(i, occurred_at=NOW - timedelta(hours=i * i), change=f"needle {i}") for i in range(40)]
    evs += [make_event(100 + i, occurred_at=NOW - timedelta(minutes=i)) for i in range(40)]
    insert(evs)
    got = fetch_all(client, token, q="NEEDLE", limit=7)
    assert [e["event_id"] for e in got] == [str(e.event_id) for e in evs[:40]]


def test_csv_cells_cannot_become_spreadsheet_formulas(client, insert) -> None:  # noqa: ANN001
    ev = make_event(
        1, change='=HYPERLINK("http://evil")', target={"type": "x", "id": "-1+2", "name": "@SUM(A1)"}
    )
    insert([ev])
    r = client.get("/api/events/export", params={"format": "csv"}, headers=auth("viewer"))
    row = next(csv.DictReader(io.StringIO(r.text)))
    assert row["change"] == '\'=HYPERLINK("http://evil")'
    assert row["target_id"] == "'-1+2" and row["target_name"] == "'@SUM(A1)"
    assert row["occurred_at"] == ev.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    assert row["event_id"] == str(ev.event_id) and row["status"] == "201"
