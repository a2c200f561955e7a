"""The audit system's own audit events: built and published here, once.

Everything auditpipe itself does that an auditor must see — an archived day, an archive deleted or
downloaded, an export, a retention or audit-switch change, a token created or revoked, a digest sealed —
is recorded as a normal raw event on ``audit.raw.v1`` and goes through the enricher like any other. The
action is performed only after its audit event was acknowledged by Kafka (acks=all): nothing sensitive
happens unaudited.

- :func:`system_event` builds the event (pure) from a contract :class:`~schemas.events_v1.Actor`;
- :class:`AuditPublisher` sends and waits for the acknowledgement (one durable producer, started on
  first use, replaced after a failure); :func:`publish_now` does the same from synchronous code (a CLI).
- :func:`is_about_audit_system` is the rule the enricher uses to never suppress these events when an
  organisation switched its audit off (turning audit off must itself stay on the record).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.events_v1 import Actor, RawEvent
from services.common.kafka import JSON_HEADERS, make_producer
from services.common.settings import Settings

# Producers (``RawEvent.producer``) of auditpipe's own components.
PRODUCER_QUERY_API = "query_api"
PRODUCER_ARCHIVE = "auditpipe-archive"
PRODUCER_ENRICHER = "auditpipe-enricher"
PRODUCER_CLI = "auditpipe-cli"
AUDIT_SYSTEM_PRODUCERS = frozenset({PRODUCER_QUERY_API, PRODUCER_ARCHIVE, PRODUCER_ENRICHER, PRODUCER_CLI})
# Entities of actions about the audit system itself (``<entity>:<verb>``).
AUDIT_SYSTEM_ENTITIES = frozenset(
    {"audit_archive", "audit_export", "audit_settings", "audit_token", "audit_digest", "audit_integrity"}
)
AUDIT_SYSTEM_ACTIONS = frozenset({"organization:audit_config_update"})


def is_about_audit_system(action: str, producer: str | None) -> bool:
    """True for events the per-organisation audit switch must never suppress."""
    if action in AUDIT_SYSTEM_ACTIONS or producer in AUDIT_SYSTEM_PRODUCERS:
        return True
    return action.rpartition(":")[0] in AUDIT_SYSTEM_ENTITIES


def person(principal: str) -> Actor:
    """The actor for a named principal (a person or token holder acting through an auditpipe tool)."""
    return Actor(type="user", id=principal[:256], name=principal[:1024])


SYSTEM = Actor(type="system", name="system")


class AuditUnavailable(Exception):
    """The audit event could not be acknowledged by Kafka: the action must not happen."""


def system_event(
    *,
    org_id: str,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: str,
    change: str,
    producer: str,
    event_type: str | None = None,
    target_name: str | None = None,
    source: str | None = None,
    metadata: dict[str, str] | None = None,
    changes: list[dict[str, Any]] | None = None,
    request: dict[str, Any] | None = None,
    status: int | None = 200,
    now: datetime | None = None,
) -> RawEvent:
    """The audit record of one action of the audit system (pure apart from a fresh event id)."""
    is_system = actor.type == "system"
    return RawEvent.model_validate(
        {
            "event_id": uuid.uuid4(),
            "occurred_at": now or datetime.now(UTC),
            "org_id": org_id,
            "actor": actor.model_dump(exclude_none=True),
            "action": action,
            "event_type": event_type or action.rpartition(":")[2],
            "target": {
                "type": target_type,
                "id": target_id[:256],
                "name": (target_name if target_name is not None else target_id)[:1024],
            },
            "source": source or ("system" if is_system else "auditpipe"),
            "status": status,
            "change": change[:4096],
            "metadata": metadata or {},
            "changes": changes or [],
            "request": request,
            "producer": producer,
        }
    )


def encode(ev: RawEvent) -> tuple[bytes, bytes]:
    """(key, value) of an audit event on the raw topic (the wire format of docs/wire-format.md)."""
    return ev.org_id.encode(), ev.model_dump_json(exclude_none=True).encode()


class AuditPublisher:
    """One durable producer for audit events (and other records that must be acknowledged first)."""

    def __init__(self, settings: Settings, topic: str, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> AIOKafkaProducer:
        async with self._lock:
            if self._producer is None:
                p = make_producer(self.settings, request_timeout_ms=int(self.timeout_s * 1000))
                try:
                    await asyncio.wait_for(p.start(), self.timeout_s)
                except BaseException:
                    await p.stop()
                    raise
                self._producer = p
            return self._producer

    async def publish(self, ev: RawEvent) -> None:
        """Send and wait for the broker's acknowledgement; :class:`AuditUnavailable` when it cannot."""
        key, value = encode(ev)
        await self.send(self.topic, key.decode(), value)

    async def publish_all(self, events: Iterable[RawEvent]) -> None:
        for ev in events:
            await self.publish(ev)

    async def send(self, topic: str, key: str, value: bytes) -> None:
        """Any record through the same durable producer (e.g. the org switch); AuditUnavailable on failure."""
        try:
            p = await self._get()
            await asyncio.wait_for(
                p.send_and_wait(topic, value, key=key.encode(), headers=JSON_HEADERS),
                self.timeout_s,
            )
        except Exception as e:  # noqa: BLE001 - any failure means "not audited"
            async with self._lock:
                if self._producer is not None:
                    try:
                        await self._producer.stop()
                    except Exception:  # noqa: BLE001, S110 - already failed; the next call starts a new one
                        pass
                    self._producer = None
            raise AuditUnavailable(type(e).__name__) from None

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None


def publish_now(settings: Settings, topic: str, events: Iterable[RawEvent]) -> None:
    """Publish from synchronous code that owns no event loop (a CLI command); raises AuditUnavailable."""
    events = list(events)
    if not events:
        return

    async def go() -> None:
        pub = AuditPublisher(settings, topic)
        try:
            await pub.publish_all(events)
        finally:
            await pub.close()

    asyncio.run(go())
