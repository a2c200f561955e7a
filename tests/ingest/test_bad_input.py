"""Bad input: each answered with its documented 4xx and a body naming the problem, while the service keeps
serving (a valid event is accepted right after every bad one). Plus hypothesis-generated payloads."""

from __future__ import annotations

import json

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.ingest.conftest import auth, example

pytestmark = pytest.mark.kafka

JSON = {"content-type": "application/json"}


def deep(n: int) -> dict:
    d: dict = {"leaf": 1}
    for _ in range(n):
        d = {"x": d}
    return d


CASES = [
    # (name, path, headers, body, status, error code, field named in errors[0] or None)
    (
        "malformed json",
        "/v1/events",
        {**auth(), **JSON},
        b'{"org_id": "org-acme",',
        400,
        "malformed_json",
        None,
    ),
    ("non-utf8", "/v1/events", {**auth(), **JSON}, b'{"org_id": "org-\xff\xfe"}', 400, "invalid_utf8", None),
    ("empty body", "/v1/events", {**auth(), **JSON}, b"", 400, "malformed_json", None),
    (
        "wrong type",
        "/v1/events",
        {**auth(), **JSON},
        orjson.dumps(example(status="two hundred")),
        422,
        "validation_error",
        "status",
    ),
    (
        "nested wrong type",
        "/v1/events",
        {**auth(), **JSON},
        orjson.dumps(example(actor={"type": "robot"})),
        422,
        "validation_error",
        "actor.type",
    ),
    (
        "missing field",
        "/v1/events",
        {**auth(), **JSON},
        orjson.dumps({k: v for k, v in example().items() if k != "action"}),
        422,
        "validation_error",
        "action",
    ),
    (
        "unknown field",
        "/v1/events",
        {**auth(), **JSON},
        orjson.dumps(example(colour="blue")),
        422,
        "validation_error",
        "colour",
    ),
    (
        "array on single endpoint",
        "/v1/events",
        {**auth(), **JSON},
        orjson.dumps([example()]),
        422,
        "validation_error",
        "",
    ),
    (
        "deeply nested payload",
        "/v1/events",
        {**auth(), **JSON},
        orjson.dumps(example(request={"payload": deep(40)})),
        422,
        "too_deep",
        None,
    ),
    (
        "nesting beyond the parser",
        "/v1/events",
        {**auth(), **JSON},
        b'{"a":' + b"[" * 5000 + b"]" * 5000 + b"}",
        422,
        "too_deep",
        None,
    ),
    (
        "oversized body",
        "/v1/events",
        {**auth(), **JSON},
        orjson.dumps(example(change="x" * 300_000)),
        413,
        "body_too_large",
        None,
    ),
    (
        "oversized event",
        "/v1/events/batch",
        {**auth(), **JSON},
        orjson.dumps([example(), example(snapshot={"blob": "y" * 40_000})]),
        413,
        "event_too_large",
        None,
    ),
    (
        "oversized batch",
        "/v1/events/batch",
        {**auth(), **JSON},
        orjson.dumps([example()] * 51),
        413,
        "too_many_events",
        None,
    ),
    (
        "oversized ndjson batch",
        "/v1/events/batch",
        {**auth(), "content-type": "application/x-ndjson"},
        b"\n".join([orjson.dumps(example())] * 51),
        413,
        "too_many_events",
        None,
    ),
    ("wrong content type", "/v1/events", {**auth(), "content-type": "text/plain"}, b"{}", 415, None, None),
    (
        "ndjson on single endpoint",
        "/v1/events",
        {**auth(), "content-type": "application/x-ndjson"},
        orjson.dumps(example()),
        415,
        None,
        None,
    ),
    (
        "latin-1 charset",
        "/v1/events",
        {**auth(), "content-type": "application/json; charset=latin-1"},
        b"{}",
        415,
        None,
        None,
    ),
    ("no token", "/v1/events", JSON, orjson.dumps(example()), 401, "unauthorized", None),
    (
        "wrong token",
        "/v1/events",
        {**auth("nope"), **JSON},
        orjson.dumps(example()),
        401,
        "unauthorized",
        None,
    ),
    ("basic auth", "/v1/events", {"authorization": "Basic dG9rLWFjbWU6", **JSON}, b"{}", 401, None, None),
    (
        "another org's token",
        "/v1/events",
        {**auth("tok-other"), **JSON},
        orjson.dumps(example(org_id="org-acme")),
        403,
        "forbidden_org",
        "org_id",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
async def test_bad_input_answered_and_service_keeps_serving(http, case) -> None:
    name, path, headers, body, status, code, field = case
    r = await http.post(path, content=body, headers=headers)
    assert r.status_code == status, (name, r.text)
    data = r.json()
    assert isinstance(data["error"], str) and data["message"]
    assert "Traceback" not in r.text
    if code:
        assert data["error"] == code, data
    if field is not None:
        assert data["errors"][0]["field"] == field, data
    if status == 401:
        assert r.headers["www-authenticate"].startswith("Bearer")
    ok = await http.post("/v1/events", json=example(), headers=auth())
    assert ok.status_code == 202, ok.text


async def test_batch_errors_name_each_item_and_nothing_is_published(http) -> None:
    batch = [example(), example(status="x"), example(), example(actor={"type": "robot"}, colour=1)]
    r = await http.post("/v1/events/batch", json=batch, headers=auth())
    assert r.status_code == 422
    errs = {(e["index"], e["field"]) for e in r.json()["errors"]}
    assert errs == {(1, "status"), (3, "actor.type"), (3, "colour")}
    r = await http.post("/v1/events/batch", json=[example(), example(org_id="org-zzz")], headers=auth())
    assert r.status_code == 403
    assert r.json()["errors"] == [
        {"index": 1, "field": "org_id", "message": "token may not write org 'org-zzz'"}
    ]


async def test_content_length_lie_is_counted_while_reading(ingest_app) -> None:
    """A body bigger than the limit is refused while streaming, even without a Content-Length header."""
    import httpx

    async def chunks():
        for _ in range(100):
            yield b" " * 10_000

    transport = httpx.ASGITransport(app=ingest_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://i") as c:
        r = await c.post("/v1/events", content=chunks(), headers={**auth(), **JSON})
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"


def _dumps(v: object) -> bytes:
    return json.dumps(v, allow_nan=False).encode()


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
mutated_events = st.builds(
    lambda base, k, v, drop: {**{kk: vv for kk, vv in base.items() if kk != drop}, **({k: v} if k else {})},
    st.just(example()),
    st.sampled_from(["", "org_id", "action", "occurred_at", "status", "actor", "request", "metadata", "x"]),
    json_values,
    st.sampled_from(["", "org_id", "action", "occurred_at"]),
)
bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(_dumps),
    mutated_events.map(_dumps),
    st.lists(mutated_events, max_size=5).map(_dumps),
)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(body=bodies, batch=st.booleans(), ndjson=st.booleans())
async def test_generated_payloads_never_5xx(http, body, batch, ndjson) -> None:
    ctype = "application/x-ndjson" if ndjson else "application/json"
    r = await http.post(
        "/v1/events/batch" if batch else "/v1/events",
        content=body,
        headers={**auth("tok-any"), "content-type": ctype},
    )
    assert r.status_code in (202, 400, 413, 415, 422), (r.status_code, r.text)
    if r.status_code == 202:
        assert len(r.json()["accepted"]) >= 1
    else:
        assert isinstance(r.json()["error"], str)


async def test_rejections_are_counted_by_reason(http) -> None:
    def value(text: str, reason: str) -> float:
        for line in text.splitlines():
            if line.startswith(f'auditpipe_ingest_events_rejected_total{{reason="{reason}"}}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = (await http.get("/metrics")).text
    r = await http.post("/v1/events/batch", json=[example(status="x"), example(colour=1)], headers=auth())
    assert r.status_code == 422
    after = (await http.get("/metrics")).text
    assert value(after, "validation_error") - value(before, "validation_error") == 2
    assert 'auditpipe_ingest_requests_total{code="422",endpoint="batch"}' in after
