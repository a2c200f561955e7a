"""Permissions and hostile input: 401/403/404/405, scope restriction, SQL injection in every parameter."""

from __future__ import annotations

import uuid
from urllib.parse import quote

import pytest

from services.common.clickhouse import make_client
from tests.query_api.conftest import auth, make_event

pytestmark = pytest.mark.clickhouse


@pytest.fixture
def scoped_data(client, insert):  # noqa: ANN001, ANN201
    evs = [
        make_event(0, org_id="org-acme", project_id="proj-web", environment_id="env-production"),
        make_event(1, org_id="org-acme", project_id="proj-web", environment_id="env-staging"),
        make_event(2, org_id="org-acme", project_id="proj-api", environment_id="env-production"),
        make_event(3, org_id="org-other", project_id="proj-web", environment_id="env-production"),
    ]
    insert(evs)
    return evs


def _ids(client, token: str, **params) -> set[str]:  # noqa: ANN001
    r = client.get("/api/events", params=params, headers=auth(token))
    assert r.status_code == 200, r.text
    return {e["event_id"] for e in r.json()["events"]}


def test_scope_restricts_results_details_facets_and_export(client, scoped_data) -> None:  # noqa: ANN001
    e = [str(x.event_id) for x in scoped_data]
    assert _ids(client, "viewer") == set(e)
    assert _ids(client, "acme") == set(e[:3])
    assert _ids(client, "acme_web_prod") == {e[0]}
    # asking for another org inside a scoped token finds nothing (never widens the scope)
    assert _ids(client, "acme", org="org-other") == set()
    assert _ids(client, "acme_web_prod", project="proj-api") == set()
    # details: out-of-scope answers 404, exactly like a missing event
    assert client.get(f"/api/events/{e[3]}", headers=auth("acme")).status_code == 404
    assert client.get(f"/api/events/{e[1]}", headers=auth("acme_web_prod")).status_code == 404
    assert client.get(f"/api/events/{e[0]}", headers=auth("acme_web_prod")).status_code == 200
    f = client.get("/api/events/facets", headers=auth("acme_web_prod")).json()
    assert f["total"] == 1
    x = client.get("/api/events/export", params={"format": "jsonl"}, headers=auth("acme"))
    assert len(x.text.splitlines()) == 3


def test_401_403_404_405(client, scoped_data) -> None:  # noqa: ANN001
    eid = str(scoped_data[0].event_id)
    for path in ("/api/events", f"/api/events/{eid}", "/api/events/facets", "/api/events/export",
                 "/api/events/archives", "/api/settings/retention?org=org-acme", "/api/me"):  # fmt: skip
        assert client.get(path).status_code == 401, path
        r = client.get(path, headers={"Authorization": "Bearer wrong-token"})
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", path
        assert client.get(path, headers={"Authorization": "Basic dXNlcjpwYXNz"}).status_code == 401
    for path in ("/api/events", f"/api/events/{eid}", "/api/events/facets", "/api/events/archives"):
        assert client.get(path, headers=auth("norole")).status_code == 403, path
    body = {"retention_days": 30, "audit_enabled": True}
    assert (
        client.put("/api/settings/retention?org=org-acme", json=body, headers=auth("viewer")).status_code
        == 403
    )
    r = client.delete("/api/events/archives/events-2020-01-01.jsonl?org=org-acme", headers=auth("viewer"))
    assert r.status_code == 403
    assert client.get(f"/api/events/{uuid.uuid4()}", headers=auth("viewer")).status_code == 404
    assert client.get("/api/events/not-a-uuid", headers=auth("viewer")).status_code == 404
    for method in ("PUT", "PATCH", "DELETE"):
        for who in ("viewer", "manager"):
            r = client.request(method, f"/api/events/{eid}", headers=auth(who), json={"action": "x:y"})
            assert r.status_code == 405, (method, who)
    # the event is untouched
    assert client.get(f"/api/events/{eid}", headers=auth("viewer")).json()["action"] == "deployment:create"
    # health and metrics are open
    for path in ("/healthz", "/readyz", "/metrics"):
        assert client.get(path).status_code == 200, path


INJECTIONS = [
    "' OR 1=1 --",
    "x'; DROP TABLE events; --",
    "\\' OR '1'='1",
    "{org:String}",
    "') UNION ALL SELECT event_json FROM system.tables --",
    "%' OR ''='",
    "1; SELECT sleep(3)",
    "\u0000\n\r'\"`",
]
STRING_PARAMS = ["org", "action", "event_type", "target_type", "target_id", "actor", "actor_type", "source",
                 "project", "environment", "q"]  # fmt: skip
OTHER_PARAMS = ["since", "until", "ip", "status", "sort", "order", "limit", "cursor"]


def test_sql_injection_in_every_parameter_finds_nothing_breaks_nothing(
    client, scoped_data, api_settings
) -> None:  # noqa: ANN001
    ch = make_client(api_settings)
    db = api_settings.clickhouse_database
    before = ch.command(f"SELECT count() FROM {db}.events")
    for n, inj in enumerate(INJECTIONS):
        paths = ("/api/events", "/api/events/facets", "/api/events/export") if n < 3 else ("/api/events",)
        for p in STRING_PARAMS:
            for path in paths:
                r = client.get(path, params={p: inj}, headers=auth("viewer"))
                assert r.status_code in (200, 422), (p, inj, r.status_code, r.text)
                if r.status_code == 200 and path == "/api/events":
                    assert r.json()["events"] == [], (p, inj)
                if r.status_code == 200 and path == "/api/events/export":
                    assert r.text.count("\n") == 1, (p, inj)  # the header row only
        for p in OTHER_PARAMS:
            r = client.get("/api/events", params={p: inj}, headers=auth("viewer"))
            assert r.status_code == 422, (p, inj, r.status_code)
        r = client.get(f"/api/events/{quote(inj, safe='')}", headers=auth("viewer"))
        assert r.status_code == 404, (inj, r.status_code)
        r = client.get("/api/events/archives", params={"org": inj}, headers=auth("viewer"))
        assert r.status_code == 200 and r.json()["archives"] == []
        r = client.get("/api/settings/retention", params={"org": inj}, headers=auth("manager"))
        assert r.status_code == 200 and r.json()["retention_days"] == api_settings.retention.default_days
    assert ch.command(f"SELECT count() FROM {db}.events") == before
    assert len(_ids(client, "viewer")) == len(scoped_data)
