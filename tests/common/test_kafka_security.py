"""Kafka encryption, authentication and authorisation against a real broker (tests/common/secure_kafka.py):
TLS listeners, SCRAM users, the StandardAuthorizer with the production ACL table of deploy/kafka/acls.yaml.

Every kind of client the services use goes over SASL_SSL with SCRAM-SHA-512 as its own principal: the
ingest's producer (the real ingest app), the query API's audit publisher (audit event and org switch), the
sink's consumer (the real sink, into ClickHouse) and a faust app built with ``faust_credentials`` (the
enricher's mapping). The ACLs let only the enricher write ``audit.events.v1`` and only the query API write
``audit.org-switch.v1``. Fixed ports (20200-20203): run under ``flock /tmp/auditpipe-private-ports.lock``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)
from fastapi.testclient import TestClient

from schemas.integrity import event_record
from services.common.audit_events import AuditPublisher, person, system_event
from services.common.clickhouse import make_client
from services.common.kafka import make_consumer, make_producer
from services.common.migrations import migrate
from services.common.settings import IngestToken, Settings, SettingsError, load_settings
from tests.common.secure_kafka import ROOT, SecureBroker, acl_table
from tests.conftest import unique

pytestmark = [pytest.mark.kafka]

RAW, EVENTS, SWITCH, DEAD = "audit.raw.v1", "audit.events.v1", "audit.org-switch.v1", "audit.deadletter.v1"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    b = SecureBroker(tmp_path_factory.mktemp("secure-kafka"))
    t0 = time.monotonic()
    try:
        b.start()
        print(f"\nsecure broker up in {time.monotonic() - t0:.1f}s")
        yield b
    finally:
        b.stop()


async def _write(settings: Settings, topic: str, value: bytes = b"{}", key: bytes = b"org-acme") -> str:
    """'ok' or the error class name of one acknowledged (acks=all, idempotent) send."""
    p = make_producer(settings, request_timeout_ms=8000)
    try:
        await p.start()
        await p.send_and_wait(topic, value, key=key)
        return "ok"
    except Exception as e:  # noqa: BLE001
        return type(e).__name__
    finally:
        await p.stop()


async def _read_all(settings: Settings, topic: str, n: int, timeout_s: float = 20) -> list[bytes]:
    """At least ``n`` values of ``topic`` from the beginning (no group: needs Read on the topic only)."""
    c = make_consumer(settings, group_id=None)
    await c.start()
    try:
        parts = c.partitions_for_topic(topic) or set()
        if not parts:
            await c._client.force_metadata_update()  # noqa: SLF001
            parts = c.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        out: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            for msgs in (await c.getmany(timeout_ms=500)).values():
                out += [m.value for m in msgs]
        return out
    finally:
        await c.stop()


# ------------------------------------------------------------------------------------------ clients
def test_ingest_producer_over_sasl_ssl(broker: SecureBroker) -> None:
    """The real ingest app, as auditpipe-ingest, publishes to audit.raw.v1 (202), which the enricher reads."""
    from services.ingest.app import create_app

    token = "secure-test-" + uuid.uuid4().hex
    tok = IngestToken(producer="svc", sha256=hashlib.sha256(token.encode()).hexdigest(), orgs=["*"])
    s = broker.settings("auditpipe-ingest")
    s = s.model_copy(update={"ingest": s.ingest.model_copy(update={"tokens": [tok]})})
    ev = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "org_id": "org-secure",
        "actor": {"type": "user", "id": "u-1", "name": "Ada"},
        "action": "deployment:create",
        "target": {"type": "deployment", "id": "d-1"},
    }
    with TestClient(create_app(s)) as client:
        r = client.post("/v1/events", json=ev, headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 202, r.text
    values = asyncio.run(_read_all(broker.settings("auditpipe-enricher"), RAW, 1, timeout_s=30))
    assert any(ev["event_id"].encode() in v for v in values)


def test_query_api_audit_publisher_over_sasl_ssl(broker: SecureBroker) -> None:
    """The query API's publisher (services.common.audit_events) writes its audit event and the org switch."""
    s = broker.settings("auditpipe-query-api")
    ev = system_event(
        org_id="org-secure", actor=person("ana"), action="audit_export:start", target_type="audit_export",
        target_id="x", change="probe", producer="query_api",
    )  # fmt: skip

    async def go() -> None:
        pub = AuditPublisher(s, RAW)
        try:
            await pub.publish(ev)
            await pub.send(SWITCH, "org-secure", b'{"org_id":"org-secure","audit_enabled":true}')
        finally:
            await pub.close()

    asyncio.run(go())
    values = asyncio.run(_read_all(broker.settings("auditpipe-enricher"), RAW, 1))
    assert any(str(ev.event_id).encode() in v for v in values)
    assert asyncio.run(_read_all(broker.settings("auditpipe-enricher"), SWITCH, 1))


def test_sink_consumer_over_sasl_ssl(broker: SecureBroker, clickhouse_settings: Settings) -> None:
    """The real sink, as auditpipe-sink in group auditpipe-sink, stores what the enricher published."""
    from services.sink.service import run_sink
    from tests.sink.helpers import enriched

    db = unique("test_secure")
    ch = make_client(clickhouse_settings)
    migrate(ch, db)
    try:
        docs = [orjson.loads(enriched(i, org="org-secure")) for i in range(20)]
        producer = broker.settings("auditpipe-enricher")

        async def publish() -> None:
            p = make_producer(producer)
            await p.start()
            try:
                for d in docs:
                    await p.send_and_wait(EVENTS, event_record(d), key=d["event_id"].encode())
            finally:
                await p.stop()

        asyncio.run(publish())
        s = broker.settings("auditpipe-sink")
        s = s.model_copy(
            update={
                "clickhouse_url": clickhouse_settings.clickhouse_url,
                "clickhouse_database": db,
                "sink": s.sink.model_copy(update={"archive_enabled": False, "batch_max_seconds": 0.2}),
            }
        )

        async def sink_until_stored() -> int:
            stop = asyncio.Event()
            task = asyncio.create_task(run_sink(s, stop, health=False))
            deadline = time.monotonic() + 60
            n = 0
            while time.monotonic() < deadline and not task.done():
                n = int(ch.command(f"SELECT count() FROM {db}.events"))
                if n >= len(docs):
                    break
                await asyncio.sleep(0.5)
            stop.set()
            await asyncio.wait_for(task, 30)
            return n

        assert asyncio.run(sink_until_stored()) == len(docs)
    finally:
        ch.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def test_faust_app_with_faust_credentials(broker: SecureBroker, tmp_path: Path) -> None:
    """A faust app (the enricher's library) with faust_credentials() consumes audit.raw.v1 in the group
    auditpipe-enricher and writes audit.events.v1 under the enricher's ACLs (its own topics included)."""
    n = 5

    async def seed() -> None:
        p = make_producer(broker.settings("auditpipe-ingest"))
        await p.start()
        try:
            for i in range(n):
                await p.send_and_wait(RAW, orjson.dumps({"faust_probe": i}), key=b"org-faust")
        finally:
            await p.stop()

    asyncio.run(seed())
    s = broker.settings("auditpipe-enricher")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITPIPE_")}
    env.update(
        AUDITPIPE_KAFKA_BOOTSTRAP=s.kafka_bootstrap,
        AUDITPIPE_KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        AUDITPIPE_KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        AUDITPIPE_KAFKA_SASL_USERNAME="auditpipe-enricher",
        AUDITPIPE_KAFKA_SASL_PASSWORD=broker.passwords["auditpipe-enricher"],
        AUDITPIPE_KAFKA_SSL_CAFILE=str(broker.certs / "ca.crt"),
        AUDITPIPE_ENRICHER__DATA_DIR=str(tmp_path / "faust"),
        PROBE_EXPECT=str(n),
        PROBE_MARKER="faust_probe",
        PYTHONPATH=str(ROOT),
    )
    r = subprocess.run(
        [sys.executable, "-m", "tests.common.faust_probe"], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, (r.stdout + r.stderr)[-2000:]
    assert "consumed" in r.stdout + r.stderr
    relayed = asyncio.run(_read_all(broker.settings("auditpipe-sink"), EVENTS, n))
    assert sum(b"faust_probe" in v for v in relayed) >= n


# ------------------------------------------------------------------------------------------ ACLs
def _writers(topic: str) -> set[str]:
    table = acl_table()
    return {p for p, e in table.items() if any(a["name"] == topic and "Write" in a["ops"] for a in e["acls"])}


@pytest.mark.parametrize("topic", [EVENTS, SWITCH, RAW, DEAD])
def test_only_the_listed_principals_write_a_topic(broker: SecureBroker, topic: str) -> None:
    """Every principal of the table tries to write ``topic``: the ones with the ACL succeed, every other
    one gets TopicAuthorizationFailed (the ingest cannot forge enriched events, nobody but the query API
    can switch an org's audit off)."""
    allowed = _writers(topic)
    got = {p: asyncio.run(_write(broker.settings(p), topic)) for p in acl_table()}
    assert {p for p, r in got.items() if r == "ok"} == allowed, got
    assert {r for p, r in got.items() if p not in allowed} == {TopicAuthorizationFailedError.__name__}, got
    if topic == EVENTS:
        assert allowed == {"auditpipe-enricher"}
    if topic == SWITCH:
        assert allowed == {"auditpipe-query-api"}


def test_reads_need_the_topic_and_the_group(broker: SecureBroker) -> None:
    async def consume(user: str, topic: str, group: str) -> str:
        c = make_consumer(broker.settings(user), topic, group_id=group)
        try:
            await c.start()
            await c.getmany(timeout_ms=3000)
            return "ok"
        except Exception as e:  # noqa: BLE001
            return type(e).__name__
        finally:
            await c.stop()

    assert asyncio.run(consume("auditpipe-sink", EVENTS, "auditpipe-sink")) == "ok"
    # the sink's group, but a topic it may not read
    denied = TopicAuthorizationFailedError.__name__
    assert asyncio.run(consume("auditpipe-sink", RAW, "auditpipe-sink")) == denied
    # its topic, but another component's group
    assert asyncio.run(consume("auditpipe-sink", EVENTS, "auditpipe-enricher")) == (
        GroupAuthorizationFailedError.__name__
    )


def test_no_identity_no_password_no_trust_gets_nothing(broker: SecureBroker) -> None:
    # PLAINTEXT listener: the client is User:ANONYMOUS, which holds no ACL (its idempotent producer is
    # refused a producer id: it may write no topic at all)
    anon = load_settings(kafka_bootstrap=broker.open)
    for topic in (RAW, EVENTS, SWITCH):
        assert asyncio.run(_write(anon, topic)) == ClusterAuthorizationFailedError.__name__

    async def plain_write() -> str:
        plain = make_producer(anon, enable_idempotence=False, acks=1, request_timeout_ms=8000)
        await plain.start()
        try:
            await plain.send_and_wait(EVENTS, b"{}")
            return "ok"
        except Exception as e:  # noqa: BLE001
            return type(e).__name__
        finally:
            await plain.stop()

    assert asyncio.run(plain_write()) == TopicAuthorizationFailedError.__name__
    # a wrong password fails authentication
    bad = broker.settings("auditpipe-enricher", password="not-the-password")
    assert asyncio.run(_write(bad, EVENTS)) in ("KafkaConnectionError", "AuthenticationFailedError")
    # without the cluster's CA (system trust store) the broker's certificate is refused
    untrusted = broker.settings("auditpipe-enricher").model_copy(update={"kafka_ssl_cafile": None})
    assert asyncio.run(_write(untrusted, EVENTS)) == KafkaConnectionError.__name__


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "PLAIN"])
def test_other_sasl_mechanisms(broker: SecureBroker, mechanism: str) -> None:
    assert asyncio.run(_write(broker.settings("auditpipe-ingest", mechanism), RAW)) == "ok"
    assert asyncio.run(_write(broker.settings("auditpipe-ingest", mechanism), EVENTS)) == (
        TopicAuthorizationFailedError.__name__
    )


def test_mutual_tls_with_an_encrypted_client_key(broker: SecureBroker) -> None:
    """SSL with a client certificate (CN=auditpipe-ingest -> User:auditpipe-ingest): same ACLs as SCRAM."""
    crt, key = broker.client_cert("auditpipe-ingest", key_password="k3y-pass")
    s = broker.mtls_settings(crt, key, "k3y-pass")
    assert asyncio.run(_write(s, RAW)) == "ok"
    assert asyncio.run(_write(s, EVENTS)) == TopicAuthorizationFailedError.__name__
    with pytest.raises(SettingsError, match="AUDITPIPE_KAFKA_SSL_CERTFILE"):
        asyncio.run(_write(broker.mtls_settings(crt, key, "wrong"), RAW))
    # the mTLS listener refuses a client without a certificate
    no_cert = broker.mtls_settings(crt, key, "k3y-pass").model_copy(
        update={"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None, "kafka_ssl_key_password": None}
    )
    assert asyncio.run(_write(no_cert, RAW)) == KafkaConnectionError.__name__
