"""AuditClient / AsyncAuditClient in both modes against the real broker; bounded buffer; flush at exit."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import uuid

import httpx
import orjson
import pytest
from pydantic import ValidationError

from auditpipe import AsyncAuditClient, AuditClient, BufferFull, DeliveryError
from schemas.events_v1 import RawEvent
from tests.ingest.conftest import example, make_topic, read_topic

pytestmark = pytest.mark.kafka

DEAD = "http://127.0.0.1:19499"  # nothing listens here


def events(n: int, tag: str) -> list[dict]:
    return [
        example(org_id=("org-acme", "org-beta")[i % 2], metadata={"tag": tag, "i": str(i)}) for i in range(n)
    ]


def check_arrived(records: list, ids: list[str], producer: str) -> None:
    got = {}
    for r in records:
        ev = RawEvent.model_validate_json(r.value)
        got[str(ev.event_id)] = (r.key, ev, dict(r.headers))
    for eid in ids:
        key, ev, headers = got[eid]
        assert key is not None and key.decode() in ids  # an envelope is keyed by its first event
        assert ev.producer == producer and headers["producer"] == producer.encode()
        assert headers["schema-version"] == b"1"


async def test_async_client_http_mode(ingest_app, ingest_cfg, raw_topic) -> None:
    transport = httpx.ASGITransport(app=ingest_app)
    async with httpx.AsyncClient(transport=transport) as hc:
        async with AsyncAuditClient(
            "http", url="http://ingest", token="tok-acme", http_client=hc, batch_size=7, flush_interval_s=0.05
        ) as client:
            ids = [await client.emit(e) for e in events(20, "async-http")]
        assert client.delivered == 20
    recs = await read_topic(ingest_cfg, raw_topic, want_ids=set(ids))
    check_arrived(recs, ids, "svc-acme")  # the ingest records the token's producer


def test_sync_client_http_mode_through_uvicorn(ingest_server) -> None:
    with AuditClient("http", url=ingest_server["url"], token="tok-acme", batch_size=10) as client:
        ids = [client.emit(e) for e in events(25, "sync-http")]
        client.flush(10)
        assert client.stats["delivered"] == 25
    from tests.conftest import run_sync

    recs = run_sync(read_topic(ingest_server["settings"], ingest_server["topic"], 25, timeout_s=10))
    check_arrived(recs, ids, "svc-acme")


async def test_async_client_kafka_mode(kafka_settings) -> None:
    topic = make_topic(kafka_settings)
    async with AsyncAuditClient(
        "kafka", bootstrap_servers=kafka_settings.kafka_bootstrap, topic=topic, producer="svc-direct"
    ) as client:
        ids = [await client.emit(e) for e in events(30, "async-kafka")]
    recs = await read_topic(kafka_settings, topic, 30, settle_s=0.3)
    assert len(recs) == 30
    check_arrived(recs, ids, "svc-direct")


def test_sync_client_kafka_mode(kafka_settings) -> None:
    topic = make_topic(kafka_settings)
    client = AuditClient(
        "kafka", bootstrap_servers=kafka_settings.kafka_bootstrap, topic=topic, producer="svc-k"
    )
    ids = [client.emit(e) for e in events(30, "sync-kafka")]
    given = str(uuid.uuid4())
    assert client.emit({**example(), "event_id": given}) == given  # a producer's own id is kept
    with pytest.raises(ValidationError):
        client.emit(example(status="nope"))  # invalid events fail at the caller, never buffered
    client.close()
    from tests.conftest import run_sync

    recs = run_sync(read_topic(kafka_settings, topic, 31, settle_s=0.3))
    assert len(recs) == 31
    check_arrived(recs, [*ids, given], "svc-k")


async def test_overflow_raise_never_drops_silently() -> None:
    client = AsyncAuditClient(
        "http",
        url=DEAD,
        token="t",
        max_buffer=3,
        batch_size=1,
        overflow="raise",
        backoff_initial_s=0.05,
        flush_at_exit=False,
    )
    taken = []
    with pytest.raises(BufferFull):
        for e in events(10, "raise"):
            taken.append(await client.emit(e))
            await asyncio.sleep(0.01)
    assert 3 <= len(taken) <= 4  # buffer (3) + the one in flight
    with pytest.raises(DeliveryError) as err:
        await client.close(timeout_s=0.3)
    assert sorted(str(e.event_id) for e in err.value.undelivered) == sorted(taken)


async def test_overflow_block_waits_for_room() -> None:
    client = AsyncAuditClient(
        "http", url=DEAD, token="t", max_buffer=2, batch_size=1, backoff_initial_s=0.05, flush_at_exit=False
    )
    taken = []
    with pytest.raises(TimeoutError):
        for e in events(10, "block"):
            ev = client.prepare(e)
            await asyncio.wait_for(client.emit_prepared(ev), 0.5)
            taken.append(str(ev.event_id))
    assert len(taken) == 3  # buffer (2) + the one in flight; the 4th blocked
    with pytest.raises(DeliveryError) as err:
        await client.close(timeout_s=0.3)
    assert sorted(str(e.event_id) for e in err.value.undelivered) == sorted(taken)


def test_unclosed_clients_flush_at_exit(kafka_settings) -> None:
    topic = make_topic(kafka_settings)
    script = textwrap.dedent(
        f"""
        import asyncio, json
        from auditpipe import AuditClient, AsyncAuditClient
        ev = json.load(open("schemas/examples/raw/user_login.json"))
        BOOT = "{kafka_settings.kafka_bootstrap}"
        sync = AuditClient("kafka", bootstrap_servers=BOOT, topic="{topic}",
                           flush_interval_s=30, batch_size=1000)
        for i in range(5):
            sync.emit(dict(ev, metadata={{"who": "sync"}}))
        async def main():
            c = AsyncAuditClient("kafka", bootstrap_servers=BOOT, topic="{topic}",
                                 flush_interval_s=30, batch_size=1000)
            for i in range(4):
                await c.emit(dict(ev, metadata={{"who": "async"}}))
        asyncio.run(main())
        # no close(): the interpreter exits here
        """
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    from tests.conftest import run_sync

    recs = run_sync(read_topic(kafka_settings, topic, 9, settle_s=0.5))
    who = sorted(RawEvent.model_validate_json(x.value).metadata["who"] for x in recs)
    assert who == ["async"] * 4 + ["sync"] * 5


async def test_refused_and_undelivered_events_come_back_as_the_events_emitted() -> None:
    """The buffer keeps an event's bytes, not its model; what the client reports (``on_rejected``,
    ``rejected``, ``failed``, ``DeliveryError``) is still each event as it was validated and emitted."""
    evs = [RawEvent.model_validate({**e, "event_id": uuid.uuid4()}) for e in events(4, "report")]
    seen: list[tuple[list[RawEvent], str]] = []
    posts: list[int] = []

    def ingest(request: httpx.Request) -> httpx.Response:
        batch = orjson.loads(request.content)
        posts.append(len(batch))
        if len(posts) == 1:  # the first batch: the second event is refused, nothing stored
            return httpx.Response(
                422, json={"errors": [{"index": 1, "field": "actor.email", "message": "refused by policy"}]}
            )
        return httpx.Response(503, json={"accepted": [batch[0]["event_id"]]})  # then: only one stored

    http = httpx.AsyncClient(transport=httpx.MockTransport(ingest))
    client = AsyncAuditClient(
        "http",
        url="http://ingest.test",
        token="t",
        batch_size=4,
        max_retries=1,
        backoff_initial_s=0.01,
        backoff_max_s=0.01,
        http_client=http,
        on_rejected=lambda es, why: seen.append((es, why)),
        flush_at_exit=False,
    )
    evs = [client.prepare(e) for e in evs]  # completed: the client's producer name
    for ev in evs:
        await client.emit_prepared(ev)
    with pytest.raises(DeliveryError) as err:
        await client.close(timeout_s=5)
    await http.aclose()
    assert posts == [4, 3, 2]  # the refused one left out, then what the 503 did not store, once retried
    assert seen == [([evs[1]], "actor.email: refused by policy")]
    assert client.rejected == [(evs[1], "actor.email: refused by policy")]
    assert err.value.rejected == client.rejected
    assert client.delivered == 2  # one stored by each 503
    assert err.value.undelivered == client.failed == [evs[3]]


def test_a_report_never_fails_on_bytes_the_contract_would_refuse_on_the_way_back() -> None:
    from auditpipe.client import _events
    from auditpipe.wire import Routing

    good = RawEvent.model_validate(example()).model_dump_json(exclude_none=True).encode()
    odd = b'{"org_id":"org-acme","occurred_at":"1990-01-01T00:00:00Z","action":"user:login"}'
    got = _events([(Routing("a", "org-acme", None), good), (Routing("b", "org-acme", None), odd)])
    assert got[0] == RawEvent.model_validate_json(good)
    assert got[1].org_id == "org-acme" and got[1].action == "user:login"  # reported, not validated
