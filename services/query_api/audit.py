"""Audit events about the query API's own sensitive actions, published to ``audit.raw.v1``.

The action is performed only after its audit event was acknowledged by Kafka (acks=all): a download,
a deletion or a settings change never happens unaudited. The producer starts on first use.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from schemas.events_v1 import RawEvent
from services.common.kafka import JSON_HEADERS, make_producer
from services.common.settings import Settings
from services.query_api.auth import Principal


class AuditUnavailable(Exception):
    pass


def audit_event(
    principal: Principal,
    org_id: str,
    action: str,
    event_type: str,
    target_type: str,
    target_id: str,
    change: str,
    request: dict[str, Any],
    changes: list[dict[str, Any]] | None = None,
) -> RawEvent:
    """The audit record of one sensitive action by ``principal`` (pure)."""
    return RawEvent.model_validate(
        {
            "event_id": uuid.uuid4(),
            "occurred_at": datetime.now(UTC),
            "org_id": org_id,
            "actor": {"type": "user", "id": principal.name, "name": principal.name},
            "action": action,
            "event_type": event_type,
            "target": {"type": target_type, "id": target_id, "name": target_id},
            "source": "query_api",
            "status": 200,
            "change": change,
            "request": request,
            "changes": changes or [],
            "producer": "query_api",
        }
    )


class AuditPublisher:
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
        """Send and wait for the broker's acknowledgement; AuditUnavailable when it cannot be had."""
        await self.send(self.topic, ev.org_id, ev.model_dump_json(exclude_none=True).encode())

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
