"""Fuzzing both HTTP APIs as real uvicorn servers (real Kafka, real ClickHouse):

1. schemathesis, positive and negative generation, over every operation of the ingest's and the query
   API's own OpenAPI documents: at least 10,000 requests in all;
2. hypothesis-generated bodies, content types, tokens and path values for every route (the documented
   ones and the probes), whatever the route expects.

Every answer must be: no 5xx; a status, content type, headers and body the document declares
(schemathesis' conformance checks); and for every 4xx a JSON body whose ``detail`` or ``error`` names the
problem. The counts are printed. Not used: schemathesis' ``positive_data_acceptance`` (rules the
document cannot express are legitimately refused: since < until, a cursor bound to its sort, an org
required when the token has none) and ``negative_data_rejection`` (a query value generated as a number
or a list is still a valid string, one repeated scalar is refused by the app itself; unknown
parameters are refused, tested in tests/query_api/test_fuzz_findings.py).

Ports 20212-20213: run under ``flock /tmp/auditpipe-private-ports.lock``.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from urllib.parse import quote

import httpx
import orjson
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import (
    FailureGroup,
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from schemas.topics import TopicSpec
from services.common.kafka import ensure_topics
from services.common.settings import Settings
from tests.conftest import run_sync
from tests.query_api.conftest import make_event
from tests.security.servers import INGEST_TOKEN, QUERY_TOKENS, Server, ingest_env, query_env, serve

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

TARGET = 10_000
SHARE = {"ingest": 0.4, "api": 0.6}  # of TARGET, spread evenly over each document's operations x modes
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def problem(r: httpx.Response | object) -> str | None:
    """Why a 4xx answer is not a machine-readable error naming the problem (None when it is)."""
    status = r.status_code  # type: ignore[attr-defined]
    if not 400 <= status < 500:
        return None
    try:
        body = orjson.loads(r.content)  # type: ignore[attr-defined]
    except orjson.JSONDecodeError:
        return f"{status} without a JSON body"
    if not isinstance(body, dict):
        return f"{status} body is not an object"
    named = body.get("detail") or body.get("error")
    return None if named else f"{status} body names no problem: {str(body)[:200]}"


@pytest.fixture(scope="module")
def servers(kafka_settings: Settings, clickhouse_settings: Settings, tmp_path_factory) -> Iterator[dict]:  # noqa: ANN001
    from services.common.clickhouse import make_client
    from services.common.migrations import migrate
    from services.sink.rows import COLUMNS, row_from_event

    db = f"test_fuzz_{uuid.uuid4().hex[:8]}"
    ch = make_client(clickhouse_settings)
    migrate(ch, db)
    events = [make_event(i, org_id=("org-acme", "org-other")[i % 2]) for i in range(200)]
    ch.insert(f"{db}.events", [row_from_event(e) for e in events], column_names=COLUMNS)
    raw = f"test.fuzz.raw.{uuid.uuid4().hex[:8]}"
    audit = f"test.fuzz.audit.{uuid.uuid4().hex[:8]}"
    run_sync(
        ensure_topics(
            kafka_settings, [TopicSpec(t, 3, 1, 86_400_000, "producer", [], [], "") for t in (raw, audit)]
        )
    )
    archives = tmp_path_factory.mktemp("archives")
    boot, chu = kafka_settings.kafka_bootstrap, clickhouse_settings.clickhouse_url
    try:
        with (
            serve("ingest", 20212, ingest_env(boot, raw)) as ingest,
            serve("api", 20213, query_env(boot, chu, db, audit, archives)) as api,
        ):
            yield {
                "ingest": (ingest, INGEST_TOKEN),
                "api": (api, QUERY_TOKENS["manager"][0]),
                "ids": [str(e.event_id) for e in events],
            }
    finally:
        ch.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def _operations(server: Server) -> list:
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    return [r.ok() for r in schema.get_all_operations()]


class Tally:
    def __init__(self) -> None:
        self.count = 0
        self.statuses: Counter[str] = Counter()
        self.findings: list[str] = []

    def report(self) -> str:
        return f"{len(self.findings)} findings:\n" + "\n".join(list(dict.fromkeys(self.findings))[:15])


def _schemathesis(op, mode: GenerationMode, examples: int, name: str, token: str, t: Tally) -> None:  # noqa: ANN001
    where = f"{name} {op.method.upper()} {op.path} [{mode.value}]"

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case) -> None:  # noqa: ANN001
        t.count += 1
        resp = case.call(headers={"Authorization": f"Bearer {token}"})
        t.statuses[f"{name} {resp.status_code}"] += 1
        curl = case.as_curl_command()[:1500]
        try:
            case.validate_response(resp, checks=CHECKS)
        except FailureGroup as g:
            t.findings.extend(f"{where}: {f.title}: {str(f)[:300]} <- {curl}" for f in g.exceptions)
        why = problem(resp)
        if why:
            t.findings.append(f"{where}: {why} <- {curl}")

    run()


def test_schemathesis_positive_and_negative(servers: dict, capsys: pytest.CaptureFixture) -> None:
    t = Tally()
    for name in ("ingest", "api"):
        server, token = servers[name]
        ops = _operations(server)
        per = max(1, -(-int(TARGET * SHARE[name]) // (len(ops) * len(GenerationMode))))
        for op in ops:
            for mode in GenerationMode:
                _schemathesis(op, mode, per, name, token, t)
    with capsys.disabled():
        print(f"\nschemathesis: {t.count} generated requests; statuses {dict(sorted(t.statuses.items()))}")
    assert t.count >= TARGET, t.count
    assert not t.findings, t.report()


# --------------------------------------------------------------------------------- hypothesis bodies
def _dumps(v: object) -> bytes:
    return json.dumps(v).encode()  # stdlib: integers of any size


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)
bodies = st.one_of(
    json_values.map(_dumps),
    st.binary(max_size=2048),
    st.text(max_size=500).map(str.encode),
    st.lists(json_values.map(_dumps), max_size=5).map(b"\n".join),  # NDJSON-ish
    st.just(b""),
)
content_types = st.sampled_from(
    [
        "application/json",
        "application/x-ndjson",
        "text/plain",
        "application/octet-stream",
        "",
        "application/json; charset=latin-1",
        "multipart/form-data; boundary=x",
        "application/xml",
    ]  # fmt: skip
)
query_keys = st.sampled_from(["org", "format", "since", "until", "limit", "cursor", "action", "q", "ip", "x"])
queries = st.lists(st.tuples(query_keys, st.text(max_size=30)), max_size=4)


def _routes(server: Server, extra: list[str]) -> list[tuple[str, str]]:
    doc = httpx.get(server.url + "/openapi.json").json()
    out = [(m.upper(), p) for p, ops in doc["paths"].items() for m in ops]
    return out + [("GET", p) for p in extra]


def _bodies(client: httpx.Client, method: str, path: str, token: str, ids: list[str], t: Tally) -> None:
    @given(
        body=bodies,
        ctype=content_types,
        auth=st.sampled_from(["none", "wrong", "valid", "valid"]),
        other_method=st.sampled_from([None, None, "PATCH", "DELETE", "PUT", "POST", "GET"]),
        value=st.one_of(st.text(max_size=60), st.sampled_from(ids)),
        query=queries,
    )
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(body: bytes, ctype: str, auth: str, other_method: str | None, value: str, query: list) -> None:
        t.count += 1
        url = path
        for param in ("{event_id}", "{filename}"):
            url = url.replace(param, quote(value, safe="") or "x")
        headers = {"content-type": ctype} if ctype else {}
        if auth != "none":
            headers["authorization"] = f"Bearer {token if auth == 'valid' else 'not-a-token'}"
        m = other_method or method
        r = client.request(m, url, params=query, content=body, headers=headers)
        t.statuses[str(r.status_code)] += 1
        req = f"{m} {url} params={query} ctype={ctype!r} auth={auth} body={body[:200]!r}"
        if r.status_code >= 500:
            t.findings.append(f"{r.status_code} {r.text[:200]} <- {req}")
        why = problem(r)
        if why:
            t.findings.append(f"{why} <- {req}")

    run()


@pytest.mark.parametrize("name", ["ingest", "api"])
def test_hypothesis_bodies_on_every_route(servers: dict, name: str, capsys: pytest.CaptureFixture) -> None:
    server, token = servers[name]
    routes = _routes(server, ["/healthz", "/readyz", "/metrics", "/", "/docs", "/nope"])
    t = Tally()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        for method, path in routes:
            _bodies(client, method, path, token, servers["ids"], t)
    with capsys.disabled():
        print(f"\nhypothesis bodies ({name}): {t.count} requests, {len(routes)} routes; {dict(t.statuses)}")
    assert not t.findings, t.report()
