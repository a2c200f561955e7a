"""Kafka down: the ingest answers 503 (with Retry-After, naming accepted and not-accepted ids) within its
deadline, never 202; once Kafka is back, re-sent events arrive and every event answered 202 is on the topic.

Runs on a PRIVATE Kafka (127.0.0.1:19492, controller 19493, tmp state dir) that this test stops and
restarts; the shared broker is never touched.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest

from auditpipe import AsyncAuditClient
from schemas.events_v1 import RawEvent
from schemas.topics import TopicSpec
from services.common.kafka import ensure_topics, kafka_ready
from services.common.settings import load_settings
from services.common.stack.manager import KAFKA_MARKER, Stack
from services.common.stack.process import read_pid, stop
from services.ingest.app import create_app
from tests.ingest.conftest import auth, example, ingest_settings, read_topic

pytestmark = pytest.mark.kafka

TOPIC = "audit.raw.v1"
DEADLINE_S = 2.0


async def wait_ready(settings, up: bool, timeout_s: float = 120) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while (await kafka_ready(settings, timeout_s=2.0)) is not up:
        assert time.monotonic() < deadline, f"kafka ready={not up} after {timeout_s}s"
        await asyncio.sleep(0.5)


def batch(n: int, tag: str) -> list[dict]:
    return [
        example(event_id=str(uuid.uuid4()), org_id=("org-acme", "org-beta")[i % 2], metadata={"tag": tag})
        for i in range(n)
    ]


async def test_broker_down_503_then_resend_nothing_acknowledged_is_missing(tmp_path) -> None:
    s = load_settings(
        kafka_bootstrap="127.0.0.1:19492",
        clickhouse_url="http://127.0.0.1:18492",  # not started: this test needs Kafka only
        stack={"state_dir": tmp_path / "stack", "kafka_controller_port": 19493, "kafka_heap": "384m"},
    )
    stack = Stack(s)
    acked: set[str] = set()  # every event_id the ingest answered as accepted
    try:
        await asyncio.to_thread(stack.kafka_up)
        await wait_ready(s, True)
        await ensure_topics(s, [TopicSpec(TOPIC, 3, 1, 86_400_000, "producer", [], [], "")])
        cfg = ingest_settings(s, publish_deadline_s=DEADLINE_S, retry_after_s=3)
        app = create_app(cfg)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://ingest", timeout=60) as http:
                a = batch(10, "before")
                r = await http.post("/v1/events/batch", json=a, headers=auth())
                assert r.status_code == 202, r.text
                acked |= set(r.json()["accepted"])

                # ---- broker down
                await asyncio.to_thread(stop, read_pid(stack.kdir / "pid"), KAFKA_MARKER, 45.0)
                await wait_ready(s, False, 30)
                client = AsyncAuditClient(
                    "http",
                    url="http://ingest",
                    token="tok-acme",
                    http_client=http,
                    backoff_initial_s=0.5,
                    backoff_max_s=3.0,
                    flush_at_exit=False,
                )
                client_ids = [await client.emit(e) for e in batch(15, "client")]

                b, c = batch(10, "during"), example(event_id=str(uuid.uuid4()), metadata={"tag": "single"})
                for path, body, ids in (
                    ("/v1/events/batch", b, [e["event_id"] for e in b]),
                    ("/v1/events", c, [c["event_id"]]),
                ):
                    t0 = time.perf_counter()
                    r = await http.post(path, json=body, headers=auth())
                    took = time.perf_counter() - t0
                    assert r.status_code == 503, r.text
                    assert took < DEADLINE_S + 1.5, took  # within its deadline (plus scheduling slack)
                    assert r.headers["retry-after"] == "3"
                    data = r.json()
                    assert data["error"] == "unavailable" and data["not_accepted"]
                    assert sorted(data["accepted"] + data["not_accepted"]) == sorted(ids)
                    acked |= set(data["accepted"])
                await asyncio.sleep(2.1)  # readiness is cached for 2 s
                assert (await http.get("/readyz")).status_code == 503
                assert (await http.get("/healthz")).status_code == 200

                # ---- broker back
                await asyncio.to_thread(stack.kafka_up)
                await wait_ready(s, True)
                for path, body in (("/v1/events/batch", b), ("/v1/events", c)):  # re-send, same ids
                    for _ in range(30):
                        r = await http.post(path, json=body, headers=auth())
                        if r.status_code == 202:
                            break
                        assert r.status_code == 503
                        await asyncio.sleep(1)
                    assert r.status_code == 202, r.text
                    acked |= set(r.json()["accepted"])
                d = batch(10, "after")
                r = await http.post("/v1/events/batch", json=d, headers=auth())
                assert r.status_code == 202
                acked |= set(r.json()["accepted"])
                await client.close(timeout_s=60)  # the client's retries got its events through
                acked |= set(client_ids)

        want = {e["event_id"] for e in a + b + d} | {c["event_id"]} | set(client_ids)
        assert acked == want
        recs = await read_topic(s, TOPIC, len(want), timeout_s=30, settle_s=1.0)
        present = [str(RawEvent.model_validate_json(x.value).event_id) for x in recs]
        missing = acked - set(present)
        print(
            f"\nacked={len(acked)} present={len(set(present))} records={len(present)} missing={len(missing)}"
        )
        assert not missing
    finally:
        await asyncio.to_thread(stack.down)
