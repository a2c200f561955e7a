"""The input table's view (migration 0012) stores exactly what services/sink/rows.py maps, and the record
bytes unchanged (real ClickHouse).

Every event is written both ways into the same table shape — rows.py's row through clickhouse-connect into
one copy of ``events``, the record bytes through ``events_input`` into ``events`` — and every column is
compared. The JSON text columns (request_query, request_payload, changes, snapshot) are ClickHouse's
serialisation of the value: equal to rows.py's text for ordinary values and, for every generated value,
equal as JSON (they differ only in escapes like ``\\u001F`` and number spellings like ``1.0``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.integrity import content_hash_of, event_record
from services.common.clickhouse import make_client
from services.common.settings import Settings
from services.sink.rows import COLUMNS, row_from_json
from services.sink.writer import insert_records
from tests.sink.helpers import enriched, event_doc, record

pytestmark = [pytest.mark.clickhouse]

JSON_TEXT = {"request_query", "request_payload", "changes", "snapshot"}


def _both_ways(s: Settings, values: list[bytes]) -> tuple[list[dict], list[dict]]:
    """(rows.py's rows, the view's rows) for ``values``, each ordered by event_id, inserted_at left out."""
    c = make_client(s)
    db = s.clickhouse_database
    c.command(f"CREATE TABLE IF NOT EXISTS {db}.events_rows AS {db}.events")
    c.command(f"TRUNCATE TABLE {db}.events_rows")
    c.command(f"TRUNCATE TABLE {db}.events")
    c.insert(f"{db}.events_rows", [row_from_json(v) for v in values], column_names=COLUMNS)
    inserted, rejected = insert_records(c, f"{db}.events_input", values, uuid.uuid4().hex)
    assert rejected == [] and inserted == len(values)
    cols = ", ".join(COLUMNS)
    out = []
    for table in ("events_rows", "events"):
        r = c.query(f"SELECT {cols} FROM {db}.{table} ORDER BY event_id, event_json")  # noqa: S608 - test
        out.append([dict(zip(COLUMNS, row, strict=True)) for row in r.result_rows])
    return out[0], out[1]


def _as_doubles(v: Any) -> Any:
    """A JSON value with every number as an IEEE double (how JSON numbers interoperate, RFC 8259 6)."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, list):
        return [_as_doubles(x) for x in v]
    return {k: _as_doubles(x) for k, x in v.items()}


def _same(a: dict, b: dict, exact_json: bool) -> None:
    for col in COLUMNS:
        x, y = a[col], b[col]
        if col in JSON_TEXT and not exact_json and x != y:
            assert (x == "") == (y == ""), (col, x, y)
            assert _as_doubles(orjson.loads(x)) == _as_doubles(orjson.loads(y)), (col, x, y)
        else:
            assert x == y, (col, x, y)


def _check(s: Settings, values: list[bytes], exact_json: bool) -> None:
    by_rows, by_view = _both_ways(s, values)
    assert len(by_rows) == len(by_view) == len(values)
    for a, b in zip(by_rows, by_view, strict=True):
        _same(a, b, exact_json)
    assert sorted(r["event_json"].encode() for r in by_view) == sorted(values)


def _ordinary() -> list[bytes]:
    """Hand-picked shapes: both record forms, every optional member absent, null or set, IPv6 (with a
    zone), offsets in times, nested payloads, changes with and without before/after."""
    t = datetime(2026, 11, 20, 9, 15, 2, 123456, tzinfo=UTC)
    full = {
        "request": {
            "method": "PUT",
            "path": "/api/x",
            "query": {"a": "1", "b": ["x", "y"]},
            "payload": {"password": "<redacted>", "nested": {"deep": [1, 2, {"k": None}]}, "é": "ü"},
            "user_agent": "curl/8",
            "peer_ip": "10.0.0.1",
            "x_forwarded_for": "203.0.113.1, 10.0.0.1",
            "headers": {"x-tool": "terraform"},
        },
        "changes": [
            {"field": "replicas", "before": 1, "after": 3},
            {"field": "name", "after": "new"},
            {"field": "gone", "before": {"a": [1]}},
        ],
        "snapshot": {"replicas": 3, "labels": {"team": "core"}},
        "sensitive_paths": ["request.payload.password"],
        "producer": "svc",
        "metadata": {"k": "v", "ü": "ß"},
        "actor": {"type": "api_token", "id": "tok-1", "name": "deploy bot", "email": "bot@example.com"},
    }
    docs: list[dict[str, Any]] = [
        event_doc(0, occurred_at=t),
        event_doc(1, occurred_at=t, **full),
        event_doc(2, occurred_at=t, client_ip="2001:db8::1"),
        event_doc(3, occurred_at=t, client_ip="fe80::1%eth0"),
        event_doc(4, occurred_at=t, client_ip=None, request=None, status=None, change=None),
        event_doc(5, occurred_at=t, request={"method": "POST", "payload": None, "query": None}),
        event_doc(6, occurred_at=t, project_id=None, environment_id=None, snapshot=None, changes=[]),
        event_doc(7, occurred_at=t.astimezone(timezone(timedelta(hours=5, minutes=30)))),
        event_doc(8, occurred_at=t, request={"payload": "just a string"}, target={"type": "x"}),
        event_doc(9, occurred_at=t, request={"payload": [1, "two", False]}, client_ip="not an ip"),
    ]
    docs[7]["received_at"] = "2026-11-20T09:15:02.999999-01:00"
    values = [event_record(d) for d in docs]
    for d in docs[:4]:
        d["event_id"] = str(uuid.uuid4())
        values.append(
            orjson.dumps({**d, "content_hash": content_hash_of(d)})
        )  # the older, non-canonical form
    values.append(enriched(10, occurred_at=t))
    return values


def test_the_view_stores_exactly_what_rows_py_maps(ch_settings) -> None:
    _check(ch_settings, _ordinary(), exact_json=True)


# -------------------------------------------------------------------------------- generated events
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
json_leaf = st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | text
json_value = st.recursive(
    # the contract's numbers: a float without fraction counts as an integer, so within ±(2**53-1) too
    json_leaf | st.floats(min_value=-(2.0**53) + 1, max_value=2.0**53 - 1, allow_nan=False, width=64),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
times = st.datetimes(
    min_value=datetime(2001, 1, 1),
    max_value=datetime(2199, 1, 1),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=-7)), timezone(timedelta(hours=9, minutes=30))]),
)
ips = st.ip_addresses().map(str) | st.sampled_from(["", "fe80::1%eth0", "999.1.1.1", "::ffff:10.0.0.5", "x"])


@st.composite
def events(draw: st.DrawFn) -> bytes:
    occ = draw(times)
    doc = event_doc(draw(st.integers(0, 1000)), org=draw(st.text(min_size=1, max_size=10)), occurred_at=occ)
    doc["received_at"] = draw(times).isoformat()
    doc["change"] = draw(st.none() | text)
    doc["client_ip"] = draw(st.none() | ips)
    doc["actor"]["name"] = draw(text)
    doc["target"]["name"] = draw(text)
    doc["metadata"] = draw(st.dictionaries(text, text, max_size=3))
    doc["sensitive_paths"] = draw(st.lists(text, max_size=2))
    doc["request"] = draw(
        st.none()
        | st.fixed_dictionaries(
            {},
            optional={
                "method": st.sampled_from(["GET", "POST"]),
                "path": text,
                "query": st.none() | st.dictionaries(text, json_value, max_size=3),
                "payload": json_value,
                "user_agent": text,
            },
        )
    )
    doc["changes"] = draw(
        st.lists(
            st.fixed_dictionaries(
                {"field": text.filter(bool)}, optional={"before": json_value, "after": json_value}
            ),
            max_size=3,
        )
    )
    doc["snapshot"] = draw(st.none() | st.dictionaries(text, json_value, max_size=3))
    return event_record(doc) if draw(st.booleans()) else orjson.dumps({**doc, "content_hash": "0" * 64})


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(events(), min_size=1, max_size=30))
def test_the_view_agrees_with_rows_py_on_generated_events(ch_settings, values) -> None:  # noqa: ANN001
    _check(ch_settings, values, exact_json=False)


def test_content_hash_is_rederived_by_clickhouse_from_event_json(ch_settings) -> None:
    """events.event_json holds exactly the record bytes, so ClickHouse itself re-derives content_hash:
    remove the hash member from the stored bytes and hash the rest."""
    c = make_client(ch_settings)
    db = ch_settings.clickhouse_database
    values = [record(i, org=f"org-{i % 3}", change=f'ü{i}\n\t"quoted"') for i in range(200)] + _ordinary()[
        :10
    ]
    insert_records(c, f"{db}.events_input", values, uuid.uuid4().hex)
    bad = c.query(
        f"SELECT count(), countIf(lower(hex(SHA256(replaceOne(event_json, "  # noqa: S608 - test
        f"concat(',\"content_hash\":\"', content_hash, '\"'), '')))) != content_hash) FROM {db}.events"
    ).result_rows[0]
    assert bad == (210, 0)
