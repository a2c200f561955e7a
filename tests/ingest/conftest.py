"""Fixtures of the ingest tests: tokens, an in-process ingest (real Kafka, a fresh raw topic per module),
and a reader that collects what arrived on a topic."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from schemas.topics import TopicSpec
from services.common.kafka import ensure_topics
from services.common.settings import IngestSettings, IngestToken, Settings
from services.ingest.app import create_app
from services.ingest.auth import hash_token
from tests.conftest import run_sync

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples" / "raw"

TOKENS = {
    "tok-acme": ("svc-acme", ["org-acme", "org-beta"]),
    "tok-any": ("svc-any", ["*"]),
    "tok-other": ("svc-other", ["org-other"]),
}


def token_settings() -> list[IngestToken]:
    return [IngestToken(producer=p, sha256=hash_token(t), orgs=orgs) for t, (p, orgs) in TOKENS.items()]


def ingest_settings(base: Settings, **over: Any) -> Settings:
    cfg = dict(
        tokens=token_settings(),
        max_batch_events=50,
        max_body_bytes=256 * 1024,
        max_event_bytes=32 * 1024,
        max_json_depth=16,
        publish_deadline_s=3.0,
        retry_after_s=2,
    )
    cfg.update(over)
    return base.model_copy(update={"ingest": IngestSettings(**cfg)})


def example(name: str = "user_login", **over: Any) -> dict[str, Any]:
    ev = json.loads((EXAMPLES / f"{name}.json").read_text())
    ev.update(over)
    return ev


def examples() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(EXAMPLES.glob("*.json"))]


def auth(token: str = "tok-acme") -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


def make_topic(settings: Settings, partitions: int = 6) -> str:
    name = f"test.audit.raw.v1.ingest.{uuid.uuid4().hex[:8]}"
    spec = TopicSpec(name, partitions, 1, 86_400_000, "producer", [], [], "")
    run_sync(ensure_topics(settings, [spec]))
    return name


async def read_topic(
    settings: Settings,
    topic: str,
    count: int = 1,
    timeout_s: float = 20.0,
    settle_s: float = 0.0,
    want_ids: set[str] | None = None,
) -> list[Any]:
    """Every record of ``topic`` from the beginning until ``count`` arrived (then ``settle_s`` more), or,
    with ``want_ids``, until every one of those event_ids was seen."""
    c = AIOKafkaConsumer(
        topic, bootstrap_servers=settings.bootstrap_servers, group_id=None, auto_offset_reset="earliest"
    )
    await c.start()
    out: list[Any] = []
    seen: set[str] = set()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        settle_until: float | None = None
        while loop.time() < deadline:
            batch = await c.getmany(timeout_ms=300)
            for recs in batch.values():
                for r in recs:
                    evs = expand(r)
                    out.extend(evs)
                    if want_ids is not None:
                        seen.update(orjson.loads(e.value).get("event_id") for e in evs)
            if want_ids is not None and want_ids <= seen:
                break
            if want_ids is None and len(out) >= count:
                if settle_until is None:
                    settle_until = loop.time() + settle_s
                if loop.time() >= settle_until:
                    break
    finally:
        await c.stop()
    return out


@dataclass
class EventRecord:
    """One event as it arrived on the raw topic: the record's key, headers and coordinates, the event's
    own JSON (an envelope's events are listed one by one) and how many events its record held."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    partition: int
    offset: int
    envelope: int


def expand(r: Any) -> list[EventRecord]:
    data = orjson.loads(r.value)
    items = data if isinstance(data, list) else [data]
    values = [orjson.dumps(x) for x in items] if isinstance(data, list) else [r.value]
    return [EventRecord(r.key, v, list(r.headers), r.partition, r.offset, len(items)) for v in values]


@pytest.fixture(scope="module")
def raw_topic(kafka_settings: Settings) -> str:
    return make_topic(kafka_settings)


@pytest.fixture(scope="module")
def ingest_cfg(kafka_settings: Settings) -> Settings:
    return ingest_settings(kafka_settings)


@pytest.fixture(scope="module")
async def ingest_app(ingest_cfg: Settings, raw_topic: str) -> AsyncIterator[Any]:
    app = create_app(ingest_cfg, topic=raw_topic)
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def http(ingest_app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=ingest_app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as c:
        yield c


SERVER_PORT = 19401


@pytest.fixture(scope="session")
def ingest_server(kafka_settings: Settings):  # noqa: ANN201
    """``auditpipe ingest`` as a real uvicorn process on 127.0.0.1:19401 writing to its own raw topic."""
    import os
    import subprocess
    import sys
    import tempfile
    import time

    topic = make_topic(kafka_settings)
    env = dict(os.environ)
    env.update(
        AUDITPIPE_KAFKA_BOOTSTRAP=kafka_settings.kafka_bootstrap,
        AUDITPIPE_INGEST__TOPIC=topic,
        AUDITPIPE_INGEST__PORT=str(SERVER_PORT),
        AUDITPIPE_INGEST__MAX_BATCH_EVENTS="50",
        AUDITPIPE_INGEST__MAX_BODY_BYTES=str(8 * 1024 * 1024),  # oversized generated lists meet validation
        AUDITPIPE_INGEST__MAX_JSON_DEPTH="16",
        AUDITPIPE_INGEST__PUBLISH_DEADLINE_S="3",
        AUDITPIPE_INGEST__TOKENS=json.dumps([t.model_dump() for t in token_settings()]),
        AUDITPIPE_LOG_LEVEL="INFO",
    )
    exe = Path(sys.executable).with_name("auditpipe")
    log_path = Path(tempfile.mkstemp(prefix="ingest-", suffix=".log")[1])
    log_file = log_path.open("wb")
    proc = subprocess.Popen([str(exe), "ingest"], env=env, stdout=log_file, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{SERVER_PORT}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = log_path.read_text(errors="replace")
                pytest.fail(f"ingest server did not become ready: {out[-2000:]}")
            time.sleep(0.2)
        yield {"url": url, "topic": topic, "settings": kafka_settings}
    finally:
        proc.terminate()  # SIGTERM: uvicorn drains, the lifespan stops the producer (flushing it)
        try:
            code = proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
            code = None
        log_file.close()
    log = log_path.read_text(errors="replace")
    log_path.unlink()
    # uvicorn re-raises the signal after a graceful shutdown, hence -SIGTERM
    assert code in (0, -15) and "Application shutdown complete" in log, (
        f"unclean stop ({code}): {log[-2000:]}"
    )
