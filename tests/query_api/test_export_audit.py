"""Exports are audited (a start event before the first byte, a complete event with the row count, filters
and outcome after the last), limited per principal and in all (429 + Retry-After, machine-readable body),
and cut at their time limit; the CSV row count is exact whatever the field contents and chunking."""

from __future__ import annotations

import asyncio
import csv
import io

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.events_v1 import RawEvent
from services.common.kafka import make_consumer
from services.common.settings import Settings
from services.query_api.export import CsvRows
from services.query_api.main import create_app
from tests.conftest import run_sync
from tests.query_api.conftest import auth, make_event
from tests.query_api.server import serve

pytestmark = [pytest.mark.clickhouse, pytest.mark.kafka]


async def _read(settings: Settings, topic: str, n: int, timeout_s: float = 20) -> list[RawEvent]:
    c = make_consumer(settings, topic, group_id=None)
    await c.start()
    out: list[RawEvent] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while len(out) < n and asyncio.get_running_loop().time() < deadline:
            for msgs in (await c.getmany(timeout_ms=300)).values():
                out += [RawEvent.model_validate(orjson.loads(m.value)) for m in msgs]
    finally:
        await c.stop()
    return out


def _settings(api_settings: Settings, topic: str, **qa: object) -> Settings:
    q = api_settings.query_api.model_copy(update={"audit_topic": topic, **qa})
    return api_settings.model_copy(update={"query_api": q})


@pytest.fixture
def audit_topic(kafka_settings: Settings, topic_names) -> str:  # noqa: ANN001
    return topic_names("audit.raw.v1")["audit.raw.v1"]


def _tricky(n: int) -> list:
    """Events whose CSV cells hold newlines, quotes and commas."""
    return [
        make_event(
            i,
            change=f'line one\nline "two", {i}\r\n""',
            target={"type": "t", "id": f"d-{i}", "name": 'a,"b"\nc'},
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_is_audited_with_filters_and_row_count(
    api_settings: Settings,
    audit_topic: str,
    insert,
    fmt: str,  # noqa: ANN001
) -> None:
    insert(_tricky(37))
    s = _settings(api_settings, audit_topic)
    params = [("format", fmt), ("org", "org-acme"), ("action", "deployment:create"), ("action", "x:y")]
    with TestClient(create_app(s)) as client:
        r = client.get("/api/events/export", params=params, headers=auth("acme"))
    assert r.status_code == 200
    rows = len(list(csv.reader(io.StringIO(r.text)))) - 1 if fmt == "csv" else len(r.text.splitlines())
    assert rows == 37
    start, done = run_sync(_read(s, audit_topic, 2))
    assert (start.action, done.action) == ("audit_export:start", "audit_export:complete")
    assert start.actor.id == done.actor.id == "acme" and start.org_id == "org-acme"
    assert start.target.id == done.target.id == r.headers["x-export-id"]
    assert done.metadata["rows"] == "37" and done.metadata["outcome"] == "complete"
    assert done.metadata["format"] == fmt and int(done.metadata["bytes"]) == len(r.content)
    # the filters, repeated values included, are on both records
    for ev in (start, done):
        assert ev.request.query == {"format": fmt, "org": "org-acme", "action": ["deployment:create", "x:y"]}
    assert "action=['deployment:create', 'x:y']" in done.change and "Exported 37 events" in done.change


def test_export_refused_without_its_audit_event(api_settings: Settings, insert) -> None:  # noqa: ANN001
    insert(_tricky(3))
    s = api_settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:19798"})  # nothing listens there
    with TestClient(create_app(s)) as client:
        client.app.state.audit.timeout_s = 2
        r = client.get("/api/events/export", headers=auth("viewer"))
        assert r.status_code == 503 and r.content.startswith(b'{"detail"')
        # the slot was given back: the next attempt is refused for the same reason, not for the limit
        assert client.get("/api/events/export", headers=auth("viewer")).status_code == 503


def test_concurrent_exports_are_limited(api_settings: Settings, audit_topic: str, insert) -> None:  # noqa: ANN001
    """One export in flight per principal, two in all: the third is 429 with Retry-After."""
    insert([make_event(i) for i in range(20_000)])  # ~26 MB: more than the socket buffers hold
    s = _settings(
        api_settings, audit_topic, export_max_per_principal=1, export_max_concurrent=2, retry_after_s=9
    )
    with serve(s) as (base, _proc), httpx.Client(base_url=base, timeout=30) as c:
        with c.stream(
            "GET", "/api/events/export", params={"format": "jsonl"}, headers=auth("viewer")
        ) as held:
            assert held.status_code == 200
            chunks = held.iter_bytes()  # kept: dropping the iterator closes the response
            next(chunks)  # streaming, slot taken
            r = c.get("/api/events/export", headers=auth("viewer"))
            assert r.status_code == 429 and r.headers["retry-after"] == "9"
            assert r.json() == {
                "error": "too_many_exports",
                "detail": "at most 1 concurrent exports of this principal; retry later",
                "retry_after_s": 9,
                "limit": 1,
            }
            with c.stream("GET", "/api/events/export", headers=auth("manager")) as second:
                assert second.status_code == 200
                chunks2 = second.iter_bytes()
                next(chunks2)
                r = c.get("/api/events/export", headers=auth("acme"))
                assert r.status_code == 429 and r.json()["detail"].endswith("exports in all; retry later")
        # the held exports were abandoned (disconnected) and their slots freed
        for _ in range(50):
            if c.get("/api/events/export", headers=auth("viewer")).status_code == 200:
                break
        else:
            pytest.fail("slot never released")
    events = run_sync(_read(s, audit_topic, 6))
    outcomes = sorted(e.metadata["outcome"] for e in events if e.action == "audit_export:complete")
    assert outcomes == ["complete", "disconnected", "disconnected"], events


def test_export_is_cut_at_its_time_limit(api_settings: Settings, audit_topic: str, insert) -> None:  # noqa: ANN001
    insert([make_event(i) for i in range(20_000)])
    s = _settings(api_settings, audit_topic, export_timeout_s=0.05)
    with serve(s) as (base, _proc), httpx.Client(base_url=base, timeout=30) as c:
        with pytest.raises(httpx.HTTPError):  # the transfer ends without its final chunk
            with c.stream(
                "GET", "/api/events/export", params={"format": "jsonl"}, headers=auth("viewer")
            ) as r:
                assert r.status_code == 200
                for _chunk in r.iter_bytes():
                    pass
    done = [e for e in run_sync(_read(s, audit_topic, 2)) if e.action == "audit_export:complete"]
    assert done and done[0].metadata["outcome"] == "timeout" and int(done[0].metadata["rows"]) < 20_000


_cell = st.text(alphabet=st.sampled_from(list('ab,"\n\r x')), max_size=8)


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(_cell, min_size=1, max_size=4), max_size=30), cuts=st.lists(st.integers(1, 50)))
def test_csv_rows_counted_across_any_chunking(rows: list[list[str]], cuts: list[int]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
    w.writerow(["h1", "h2"])
    w.writerows(rows)
    data = buf.getvalue().encode()
    counter, pos = CsvRows(), 0
    for n in [*cuts, len(data)]:
        counter.feed(data[pos : pos + n])
        pos += n
    assert counter.rows == len(rows)
