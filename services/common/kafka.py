"""Kafka helpers shared by every service: client factories, topic creation, dead letters, lag."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from auditpipe.backoff import Backoff
from auditpipe.wire import DURABLE_PRODUCER_CONFIG
from schemas.events_v1 import DeadLetter
from schemas.topics import DEADLETTER, TopicSpec, load_topics
from services.common.metrics import CONSUMER_LAG
from services.common.settings import Settings

JSON_HEADERS = [("content-type", b"application/json"), ("schema-version", b"1")]


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """The Kafka security settings as aiokafka client keyword arguments (every client of every service)."""
    kw: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism:
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            kw["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kw


_security = security_kwargs  # former private name, kept for callers not yet moved


def faust_credentials(settings: Settings) -> Any:
    """The same Kafka security settings as faust broker credentials (the enricher's faust app)."""
    import ssl

    import faust

    proto = settings.kafka_security_protocol
    ctx = ssl.create_default_context() if proto in ("SSL", "SASL_SSL") else None
    if settings.kafka_sasl_mechanism:
        pw = settings.kafka_sasl_password.get_secret_value() if settings.kafka_sasl_password else None
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=pw,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=ctx,
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """A durable producer: acks=all, idempotence, compression, batching."""
    kw: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        **DURABLE_PRODUCER_CONFIG,
        "retry_backoff_ms": 100,
        **_security(settings),
    }
    kw.update(overrides)
    return AIOKafkaProducer(**kw)


def make_consumer(
    settings: Settings, *topics: str, group_id: str | None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer with manual commits (commit only after the write that holds the offsets)."""
    kw: dict[str, Any] = dict(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1024 * 1024,
        fetch_max_bytes=32 * 1024 * 1024,
        session_timeout_ms=30_000,
        heartbeat_interval_ms=3_000,
        max_poll_interval_ms=600_000,
        **_security(settings),
    )
    kw.update(overrides)
    return AIOKafkaConsumer(*topics, **kw)


async def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] | None = None, timeout_s: float = 60.0
) -> list[str]:
    """Create missing topics from ``schemas/topics``; returns the names created.

    A broker still starting is retried with the shared backoff (0.5 s doubling to 5 s, jittered) until
    ``timeout_s``."""
    specs = list(specs) if specs is not None else list(load_topics().values())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    backoff = Backoff(initial_s=0.5, cap_s=5.0, jitter="equal")
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **_security(settings))
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            todo = [s for s in specs if s.name not in existing]
            created = []
            for s in todo:
                try:
                    await admin.create_topics(
                        [
                            NewTopic(
                                name=s.name,
                                num_partitions=s.partitions,
                                replication_factor=s.replication_factor,
                                topic_configs=s.configs(),
                            )
                        ]
                    )
                    created.append(s.name)
                except TopicAlreadyExistsError:
                    pass
            return created
        except Exception as e:  # noqa: BLE001 - broker still starting: retry until deadline
            left = deadline - loop.time()
            if left <= 0:
                raise RuntimeError(f"could not create topics: {e!r}") from e
            await asyncio.sleep(min(backoff.next_delay(), left))
        finally:
            await admin.close()


def encode_original(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode()


async def send_dead_letter(producer: AIOKafkaProducer, letter: DeadLetter, topic: str = DEADLETTER) -> None:
    """Publish a dead letter and wait for the broker's acknowledgement."""
    key = letter.org_id.encode() if letter.org_id else None
    value = orjson.dumps(letter.model_dump(mode="json"))
    fut = await producer.send(topic, value=value, key=key, headers=JSON_HEADERS)
    await fut


async def update_lag(consumer: AIOKafkaConsumer, service: str, group: str) -> int:
    """Refresh the lag gauge for every assigned partition; returns the total lag."""
    parts = list(consumer.assignment())
    if not parts:
        return 0
    ends = await consumer.end_offsets(parts)
    total = 0
    for tp in parts:
        try:
            pos = await consumer.position(tp)
        except Exception:  # noqa: BLE001, S112 - partition revoked meanwhile
            continue
        lag = max(0, ends.get(tp, pos) - pos)
        total += lag
        CONSUMER_LAG.labels(service, group, tp.topic, str(tp.partition)).set(lag)
    return total


async def kafka_ready(settings: Settings, timeout_s: float = 3.0) -> bool:
    """True when the cluster answers a metadata request within ``timeout_s``."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        request_timeout_ms=int(timeout_s * 1000),
        **_security(settings),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        await asyncio.wait_for(admin.list_topics(), timeout_s)
        return True
    except Exception:  # noqa: BLE001
        return False
    finally:
        try:
            await admin.close()
        except Exception:  # noqa: BLE001, S110
            pass


__all__ = [
    "JSON_HEADERS",
    "TopicPartition",
    "make_producer",
    "make_consumer",
    "ensure_topics",
    "send_dead_letter",
    "encode_original",
    "update_lag",
    "kafka_ready",
]


async def topic_end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """{partition: end offset} of ``topic`` (how many messages it ever held, per partition)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **_security(settings))
    await admin.start()
    try:
        desc = await admin.describe_topics([topic])
    finally:
        await admin.close()
    parts = [p["partition"] for p in desc[0]["partitions"]] if desc else []
    if not parts:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, **_security(settings)
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def group_lag(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """{partition: messages not yet committed by ``group``} for ``topic`` (from the broker's view)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers, **_security(settings))
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    ends = await topic_end_offsets(settings, topic)
    done = {tp.partition: om.offset for tp, om in committed.items() if tp.topic == topic}
    return {p: max(0, end - max(0, done.get(p, 0))) for p, end in ends.items()}


async def report_group_lag(
    settings: Settings, service: str, group: str, topic: str, every_s: float = 10.0
) -> None:
    """Keep :data:`CONSUMER_LAG` current for a group whose consumer we do not own (e.g. faust's)."""
    while True:
        try:
            for p, lag in (await group_lag(settings, group, topic)).items():
                CONSUMER_LAG.labels(service, group, topic, str(p)).set(lag)
        except Exception:  # noqa: BLE001, S110 - broker away: keep the last value, try again
            pass
        await asyncio.sleep(every_s)
