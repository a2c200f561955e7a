"""Every finding of the fuzzers (tests/security/test_fuzz.py), as the exact request that showed it, and
the test that shows it fixed."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi.testclient import TestClient

from services.common.settings import Settings
from services.query_api.main import create_app
from tests.conftest import run_sync
from tests.query_api.conftest import auth, query_tokens

pytestmark = [pytest.mark.clickhouse]


@pytest.fixture(scope="module")
def api(clickhouse_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    from services.common.clickhouse import make_client
    from services.common.migrations import migrate

    db = f"test_findings_{uuid.uuid4().hex[:8]}"
    ch = make_client(clickhouse_settings)
    migrate(ch, db)
    qa = clickhouse_settings.query_api.model_copy(update={"tokens": query_tokens(), "audit_topic": "unused"})
    archives = tmp_path_factory.mktemp("archives")
    (archives / "org-acme").mkdir()
    ret = clickhouse_settings.retention.model_copy(update={"archive_dir": archives})
    s = clickhouse_settings.model_copy(update={"query_api": qa, "clickhouse_database": db, "retention": ret})
    try:
        with TestClient(create_app(s)) as c:
            yield c
    finally:
        ch.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def _names(r: httpx.Response) -> list[str]:
    return [d["loc"][-1] for d in r.json()["detail"]]


# Query API, finding 1: a time outside ClickHouse's DateTime64 range answered 500 (the query failed).
@pytest.mark.parametrize(
    "query,field",
    [
        # as schemathesis sent it (GET /api/events/facets, positive): year 142 with a +00:32 offset
        ("target_id=%5D&since=0142-09-24T19%3A42%3A53%2B00%3A32&actor=&q=r", "since"),
        ("since=0177-08-17T04%3A47%3A30.177638Z&action=%7F", "since"),
        ("until=2400-01-01T00:00:00Z", "until"),
        # year 1 with a positive offset: converting to UTC overflowed (OverflowError -> 500)
        ("since=0001-01-01T00%3A00%3A00%2B05%3A00", "since"),
    ],
)
@pytest.mark.parametrize("path", ["/api/events", "/api/events/facets", "/api/events/export"])
def test_time_out_of_range_is_422_naming_it(api: TestClient, path: str, query: str, field: str) -> None:
    r = api.get(f"{path}?{query}", headers=auth("viewer"))
    assert r.status_code == 422 and _names(r) == [field], r.text


# Query API, finding 2: unknown query parameters were ignored (negative_data_rejection: "query violates
# additionalProperties"), so a misspelt filter silently widened a search or an export.
def test_unknown_query_parameter_is_422_naming_it(api: TestClient) -> None:
    for path in (
        "/api/events",
        "/api/events/export",
        "/api/events/facets",
        "/api/me",
        "/api/events/archives",
    ):
        r = api.get(f"{path}?orgg=org-acme", headers=auth("viewer"))
        assert r.status_code == 422 and _names(r) == ["orgg"], (path, r.text)
    # the authentication comes first: nothing is said to a caller without a token
    assert api.get("/api/events?orgg=x").status_code == 401


# Query API, finding 3: a scalar parameter given twice kept the last value silently ("org violates type
# (became array)").
def test_repeated_scalar_parameter_is_422(api: TestClient) -> None:
    r = api.get("/api/events?org=org-acme&org=org-other", headers=auth("viewer"))
    assert r.status_code == 422 and _names(r) == ["org"]
    assert api.get("/api/events?action=a:b&action=c:d", headers=auth("viewer")).status_code == 200


# Query API, finding 4: 400/401/403/404/429/503 answers and the export's content types were missing
# from the OpenAPI document (status_code_conformance / content_type_conformance).
def test_openapi_documents_every_answer(api: TestClient) -> None:
    doc = api.get("/openapi.json").json()
    for path, ops in doc["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, op in ops.items():
            assert {"400", "401", "403", "404", "422", "503"} <= set(op["responses"]), (method, path)
    export = doc["paths"]["/api/events/export"]["get"]["responses"]
    assert "429" in export and {"text/csv", "application/x-ndjson"} <= set(export["200"]["content"])
    download = doc["paths"]["/api/events/archives/{filename}"]["get"]["responses"]["200"]["content"]
    assert {"application/x-ndjson", "application/gzip"} <= set(download)


# Query API, finding 5: an org id of 256 non-ASCII characters (allowed) percent-encodes to a folder name
# of ~3 KB; asking the file system for its archives failed with ENAMETOOLONG -> 500. Exact request
# (schemathesis, positive): GET /api/events/archives?org=𝓣𝓱𝓮 𝓺𝓾𝓲𝓬𝓴 𝓫𝓻𝓸𝔀𝓷 𝓯𝓸𝔁 … (mathematical script letters)
def test_archives_of_an_org_whose_folder_name_cannot_exist(api: TestClient) -> None:
    org = "𝓣𝓱𝓮 𝓺𝓾𝓲𝓬𝓴 𝓫𝓻𝓸𝔀𝓷 𝓯𝓸𝔁 𝓳𝓾𝓶𝓹𝓼 𝓸𝓿𝓮𝓻 𝓽𝓱𝓮 𝓵𝓪𝔃𝔂 𝓭𝓸𝓰"
    r = api.get("/api/events/archives", params={"org": org}, headers=auth("manager"))
    assert r.status_code == 200 and r.json()["archives"] == []
    for method in ("GET", "DELETE"):
        r = api.request(method, "/api/events/archives/events-2026-01-01.jsonl", params={"org": org},
                        headers=auth("manager"))  # fmt: skip
        assert r.status_code in (404, 503), (method, r.text)  # DELETE audits first (no Kafka here)


# Query API, finding 6: a body that is not UTF-8, sent without Content-Type, made FastAPI's JSON decoding
# raise UnicodeDecodeError -> 500 (hypothesis bodies): PUT /api/settings/retention, body b"\xc9ldl1".
def test_non_utf8_body_without_content_type_is_400(api: TestClient) -> None:
    r = api.put("/api/settings/retention?org=org-acme", content=b"\xc9ldl1", headers=auth("manager"))
    assert r.status_code == 400 and r.json()["detail"]


# Ingest, finding 7 (fixed): a timestamp that overflowed when converted to UTC answered 500.
# schemas/events_v1.py RawEvent._utc called astimezone(UTC), which raises OverflowError (not a ValueError,
# so pydantic did not turn it into a validation error). Exact request (schemathesis, positive):
#   POST /v1/events  {"action": "0:0", "occurred_at": "0005-01-02T01:00:01Z", "org_id": "0",
#                     "received_at": "0001-01-01T00:01:01+02:00", "target": {}, ...}   -> 500
@pytest.mark.kafka
def test_ingest_timestamp_overflow_is_422(kafka_settings: Settings) -> None:
    assert _ingest_status(kafka_settings, received_at="0001-01-01T00:01:01+02:00") == 422


# Ingest, finding 8 (fixed: the contract holds the table's range): an occurred_at the store refuses
# (before 2000 or from 2200 on: migration 0004's constraint) was answered 202, then dead-lettered by the
# sink: an accepted event that is never stored, decided by producer content. Exact request (schemathesis,
# positive):
#   POST /v1/events  {"action": "0:0", "occurred_at": "0005-01-02T01:00:01Z", "org_id": "0", "target": {}}
#   -> 202
@pytest.mark.kafka
def test_ingest_refuses_an_occurred_at_the_store_cannot_hold(kafka_settings: Settings) -> None:
    assert _ingest_status(kafka_settings, occurred_at="0005-01-02T01:00:01Z") == 422


def _ingest_status(settings: Settings, **fields: str) -> int:
    from services.ingest.app import create_app as ingest_app
    from tests.ingest.conftest import auth as ingest_auth
    from tests.ingest.conftest import ingest_settings, make_topic

    ev = {
        "action": "a:b",
        "occurred_at": datetime.now(UTC).isoformat(),
        "org_id": "o",
        "target": {},
        **fields,
    }
    app = ingest_app(ingest_settings(settings), topic=make_topic(settings))

    async def go() -> int:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
                return (await c.post("/v1/events", json=ev, headers=ingest_auth("tok-any"))).status_code

    return run_sync(go())
