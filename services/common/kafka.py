"""Kafka helpers shared by every service: client factories, topic creation, dead letters, lag.

Every aiokafka client (producers, consumers, admin clients) gets its security from
:func:`security_kwargs`, and the enricher's faust app from :func:`faust_credentials`: one reading of the
``AUDITPIPE_KAFKA_*`` settings (protocol, SASL mechanism and user, TLS trust and client certificate), so
no client can end up on a weaker connection than the others.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from auditpipe.backoff import Backoff
from auditpipe.wire import DURABLE_PRODUCER_CONFIG
from schemas.events_v1 import DeadLetter
from schemas.topics import DEADLETTER, TopicSpec, load_topics
from services.common.metrics import CONSUMER_LAG
from services.common.settings import Settings, SettingsError

if TYPE_CHECKING:
    from faust.types.auth import CredentialsT

JSON_HEADERS = [("content-type", b"application/json"), ("schema-version", b"1")]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of every Kafka connection (None for PLAINTEXT / SASL_PLAINTEXT).

    The broker's certificate is always verified (against ``kafka_ssl_cafile``, else the system trust
    store), its name checked unless ``kafka_ssl_check_hostname`` is off (refused in production), TLS 1.2 at
    least; a client certificate is presented when ``kafka_ssl_certfile`` is set (mutual TLS). An unreadable
    file raises :class:`SettingsError` naming the setting.
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    except ssl.SSLError as e:  # pragma: no cover - broken system store
        raise SettingsError(f"invalid setting AUDITPIPE_KAFKA_SSL_CAFILE: {e}") from None
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = settings.kafka_ssl_check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    name = "AUDITPIPE_KAFKA_SSL_CAFILE"
    try:
        if settings.kafka_ssl_cafile is not None:
            ctx.load_verify_locations(cafile=str(settings.kafka_ssl_cafile))
        if settings.kafka_ssl_certfile is not None:
            name = "AUDITPIPE_KAFKA_SSL_CERTFILE"
            pw = settings.kafka_ssl_key_password
            ctx.load_cert_chain(
                str(settings.kafka_ssl_certfile),
                str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
                pw.get_secret_value() if pw is not None else None,
            )
    except OSError as e:  # ssl.SSLError included
        reason = getattr(e, "reason", None) or e.strerror or type(e).__name__
        raise SettingsError(f"invalid setting {name}: cannot load it ({reason})") from None
    return ctx


def security_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments every aiokafka client (producer, consumer, admin) is built with."""
    kw: dict[str, Any] = {"security_protocol": settings.kafka_security_protocol}
    ctx = ssl_context(settings)
    if ctx is not None:
        kw["ssl_context"] = ctx
    if settings.kafka_security_protocol.startswith("SASL_"):
        kw["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kw["sasl_plain_username"] = settings.kafka_sasl_username
        if settings.kafka_sasl_password is not None:
            kw["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kw


def faust_credentials(settings: Settings) -> CredentialsT | None:
    """The same settings as faust ``broker_credentials`` (the enricher's app): SASL with its TLS context,
    TLS alone (mutual TLS when a client certificate is set), or None for PLAINTEXT."""
    import faust

    ctx = ssl_context(settings)
    if settings.kafka_security_protocol.startswith("SASL_"):
        pw = settings.kafka_sasl_password
        # faust picks SASL_SSL when a context is given, SASL_PLAINTEXT otherwise
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=pw.get_secret_value() if pw is not None else None,
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
        **security_kwargs(settings),
    }
    kw.update(overrides)
    return AIOKafkaProducer(**kw)


def make_admin(settings: Settings, **overrides: Any) -> AIOKafkaAdminClient:
    """An admin client with the same connection and security settings as every other client."""
    return AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers, **security_kwargs(settings), **overrides
    )


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
        **security_kwargs(settings),
    )
    kw.update(overrides)
    return AIOKafkaConsumer(*topics, **kw)


CLUSTER_MIN_BROKERS = 3


async def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] | None = None, timeout_s: float = 60.0
) -> list[str]:
    """Create missing topics from ``schemas/topics``; returns the names created.

    Each is created as its file says for the environment of :func:`topics_environment` (partitions,
    replication factor, ``min.insync.replicas``); an existing topic is left as it is.
    """
    specs = list(specs) if specs is not None else list(load_topics().values())
    deadline = asyncio.get_running_loop().time() + timeout_s
    last: Exception | None = None
    while True:
        admin = make_admin(settings)
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            todo = [s for s in specs if s.name not in existing]
            if todo:
                env = await topics_environment(settings, admin)
                todo = [s.for_environment(env) for s in todo]
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
            last = e
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError(f"could not create topics: {e!r}") from last
            await asyncio.sleep(1.0)
        finally:
            await admin.close()


async def topics_environment(settings: Settings, admin: AIOKafkaAdminClient) -> str:
    """The ``schemas/topics`` environment to create topics for: the setting ``kafka_topics_environment``,
    or with ``auto`` ``cluster`` when the cluster has at least three brokers, else ``local``."""
    env = settings.kafka_topics_environment
    if env != "auto":
        return env
    brokers = (await admin.describe_cluster()).get("brokers") or []
    return "cluster" if len(brokers) >= CLUSTER_MIN_BROKERS else "local"


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
    admin = make_admin(settings, request_timeout_ms=int(timeout_s * 1000))
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
    "make_admin",
    "security_kwargs",
    "ssl_context",
    "faust_credentials",
    "ensure_topics",
    "send_dead_letter",
    "encode_original",
    "update_lag",
    "kafka_ready",
    "record_ids",
    "topic_partitions",
    "topic_end_offsets",
]


async def topic_partitions(settings: Settings, topic: str, attempts: int = 5) -> list[int]:
    """The partition numbers of ``topic``, sorted; empty when it does not exist (or is not visible).

    A broker that is restarting (a rolling restart of a cluster) answers "not ready" for a moment: such
    retriable errors are retried ``attempts`` times with backoff before they are raised."""
    backoff = Backoff(initial_s=0.5, cap_s=5.0)
    for attempt in range(1, attempts + 1):
        admin = make_admin(settings)
        try:
            await admin.start()
            desc = await admin.describe_topics([topic])
            break
        except KafkaError as e:
            if not e.retriable or attempt == attempts:
                raise
        finally:
            await admin.close()
        await asyncio.sleep(backoff.next_delay())
    return sorted(
        p["partition"]
        for d in desc
        if d.get("topic") == topic and d.get("error_code", 0) in (0, None)
        for p in d.get("partitions", [])
    )


def record_ids(value: bytes | None) -> tuple[str | None, str | None]:
    """Best-effort (event_id, org_id) of a record, for a dead letter or a log line; never raises."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(doc, dict):
        return None, None
    eid, org = doc.get("event_id"), doc.get("org_id")
    return (str(eid) if eid is not None else None), (org if isinstance(org, str) else None)


async def topic_end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    """{partition: end offset} of ``topic`` (how many messages it ever held, per partition)."""
    parts = await topic_partitions(settings, topic)
    if not parts:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers, enable_auto_commit=False, **security_kwargs(settings)
    )
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def group_lag(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """{partition: messages not yet committed by ``group``} for ``topic`` (from the broker's view)."""
    admin = make_admin(settings)
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
