"""``GET /api/conflicts`` over what the real sink kept aside, and the events API still showing the original
(real Kafka and ClickHouse: the sink runs in-process on fresh topics, the API on the same database)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from fastapi.testclient import TestClient

from schemas.integrity import event_record
from services.common.settings import QueryToken, Settings
from services.query_api.auth import token_sha256
from services.query_api.main import create_app
from services.sink.service import Sink
from tests.query_api.conftest import auth
from tests.sink.helpers import count, event_doc, produce_by_id, run_until, sink_settings

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

T0 = datetime(2026, 11, 20, 9, 15, 2, 123000, tzinfo=UTC)
EXTRA = {
    "other_mgr": ("other-mgr-token-0123456789", dict(roles=["Manager"], org="org-other")),
    "acme_proj_mgr": (
        "acme-proj-mgr-token-0123456789",
        dict(roles=["Manager"], org="org-acme", projects=["p"]),
    ),
}


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {EXTRA[name][0]}"} if name in EXTRA else auth(name)


def _forge(doc: dict, **changes: object) -> bytes:
    d = {k: v for k, v in doc.items() if k != "content_hash"}
    d.update(changes)
    return event_record(d)


@pytest.fixture
def stored(api_settings: Settings, topic_names, run) -> dict:  # noqa: ANN001
    """org-acme's event, then three records reusing its id: same org and time, other time, other org."""
    topics = topic_names("audit.events.v1", "audit.deadletter.v1")
    s = sink_settings(api_settings, topics)
    doc = event_doc(1, org="org-acme", occurred_at=T0, change="deleted environment production")
    original = event_record(doc)
    forgeries = [
        _forge(doc, change="nothing happened"),
        _forge(doc, change="nothing happened", occurred_at=(T0 + timedelta(days=2)).isoformat()),
        _forge(doc, org_id="org-other", change="ours now"),
    ]
    run(produce_by_id(s, topics["audit.events.v1"], [original]))
    assert run(run_until(Sink(s), lambda: count(s) == 1, 60))
    run(produce_by_id(s, topics["audit.events.v1"], forgeries))
    assert run(run_until(Sink(s), lambda: count(s, "count()", "event_conflicts") == 3, 60))
    return {"doc": doc, "original": original, "forgeries": forgeries}


@pytest.fixture
def run():  # noqa: ANN201
    from tests.conftest import run_sync

    return run_sync


@pytest.fixture
def api(api_settings: Settings) -> Iterator[TestClient]:
    extra = [QueryToken(principal=k, sha256=token_sha256(t), **kw) for k, (t, kw) in EXTRA.items()]
    qa = api_settings.query_api.model_copy(update={"tokens": [*api_settings.query_api.tokens, *extra]})
    with TestClient(create_app(api_settings.model_copy(update={"query_api": qa}))) as c:
        yield c


def _hash(v: bytes) -> str:
    return orjson.loads(v)["content_hash"]


def test_events_show_the_original_and_managers_see_every_forgery(api: TestClient, stored: dict) -> None:
    eid, original = stored["doc"]["event_id"], stored["original"]
    r = api.get(f"/api/events/{eid}", headers=auth("viewer"))
    assert r.status_code == 200 and r.content == original
    listed = api.get("/api/events", params={"org": "org-acme"}, headers=auth("viewer")).json()["events"]
    assert [e["change"] for e in listed if e["event_id"] == eid] == ["deleted environment production"]
    assert api.get("/api/events", params={"org": "org-other"}, headers=auth("viewer")).json()["events"] == []

    r = api.get("/api/conflicts", headers=auth("manager"))
    assert r.status_code == 200, r.text
    got = r.json()["conflicts"]
    assert len(got) == 3 and {c["event_id"] for c in got} == {eid}
    assert {c["stored"]["content_hash"] for c in got} == {_hash(original)}
    assert sorted(c["record"]["content_hash"] for c in got) == sorted(_hash(f) for f in stored["forgeries"])
    assert sorted(c["record"]["record"].encode() for c in got) == sorted(stored["forgeries"])
    assert {c["record"]["org_id"] for c in got} == {"org-acme", "org-other"}
    assert {c["stored"]["org_id"] for c in got} == {"org-acme"}
    assert {c["record"]["occurred_at"] for c in got} == {
        "2026-11-20T09:15:02.123Z",
        "2026-11-22T09:15:02.123Z",
    }
    assert all(c["source"]["topic"].startswith("test.audit.events.v1.") for c in got)


def test_an_org_scoped_manager_sees_its_side_only(api: TestClient, stored: dict) -> None:
    acme = api.get("/api/conflicts", headers=auth("acme_mgr")).json()["conflicts"]
    assert len(acme) == 3  # every forgery concerns acme's event
    cross = next(c for c in acme if c["record"]["org_id"] is None)
    assert cross["record"]["record"] is None and cross["record"]["occurred_at"] is None
    assert cross["record"]["content_hash"] == _hash(stored["forgeries"][2])
    other = api.get("/api/conflicts", headers=_auth("other_mgr")).json()["conflicts"]
    assert len(other) == 1
    assert other[0]["record"]["record"].encode() == stored["forgeries"][2]
    assert other[0]["stored"]["org_id"] is None and other[0]["stored"]["occurred_at"] is None
    # asking for another org never widens the scope
    assert (
        api.get("/api/conflicts", params={"org": "org-zzz"}, headers=auth("acme_mgr")).json()["conflicts"]
        == []
    )


def test_filters_and_paging(api: TestClient, stored: dict) -> None:
    eid = stored["doc"]["event_id"]
    assert (
        len(api.get("/api/conflicts", params={"event_id": eid}, headers=auth("manager")).json()["conflicts"])
        == 3
    )
    other_id = "00000000-0000-0000-0000-000000000001"
    assert (
        api.get("/api/conflicts", params={"event_id": other_id}, headers=auth("manager")).json()["conflicts"]
        == []
    )
    assert (
        len(
            api.get("/api/conflicts", params={"org": "org-other"}, headers=auth("manager")).json()[
                "conflicts"
            ]
        )
        == 1
    )
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert (
        api.get("/api/conflicts", params={"since": future}, headers=auth("manager")).json()["conflicts"] == []
    )
    seen, cursor = [], None
    while True:
        params: dict = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = api.get("/api/conflicts", params=params, headers=auth("manager")).json()
        seen += [c["source"]["offset"] for c in page["conflicts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 3 and len(set(seen)) == 3 and seen == sorted(seen, reverse=True)


@pytest.mark.parametrize(
    ("token", "params", "status", "field"),
    [
        (None, {}, 401, None),
        ("viewer", {}, 403, None),
        ("acme", {}, 403, None),
        ("acme_proj_mgr", {}, 403, None),
        ("manager", {"event_id": "nope"}, 422, "event_id"),
        ("manager", {"cursor": "%%%"}, 422, "cursor"),
        ("manager", {"limit": 100_000}, 422, "limit"),
        ("manager", {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 422, "until"),
    ],
)
def test_refusals_name_the_problem(
    api: TestClient, token: str | None, params: dict, status: int, field: str | None
) -> None:
    r = api.get("/api/conflicts", params=params, headers=_auth(token) if token else {})
    assert r.status_code == status, r.text
    if field is not None:
        assert r.json()["detail"][0]["loc"] == ["query", field]
