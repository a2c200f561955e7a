"""The wire format of ``audit.raw.v1`` (see docs/wire-format.md), written once for the ingest and the client.

key     = ``org_id`` as UTF-8 bytes (all events of an org land on one partition, in order)
value   = UTF-8 JSON of one RawEvent: ``model_dump(mode="json", exclude_none=True)``
headers = content-type: application/json, schema-version: 1, producer: <name>
"""

from __future__ import annotations

from typing import Any

from schemas.events_v1 import SCHEMA_VERSION, RawEvent

CONTENT_TYPE = b"application/json"

# How every auditpipe producer talks to Kafka (ingest, services, the client in Kafka mode): durable
# (acks=all, idempotent), compressed, batched. Written once; callers add bootstrap servers and overrides.
DURABLE_PRODUCER_CONFIG: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "compression_type": "lz4",
    "linger_ms": 5,
    "max_batch_size": 1024 * 1024,
    "max_request_size": 8 * 1024 * 1024,
    "request_timeout_ms": 30_000,
}


def encode_value(event: RawEvent) -> bytes:
    """The message value: compact UTF-8 JSON without null fields (pydantic JSON mode, in Rust)."""
    return event.model_dump_json(exclude_none=True).encode()


def encode_key(event: RawEvent) -> bytes:
    return event.org_id.encode("utf-8")


def headers(producer: str | None) -> list[tuple[str, bytes]]:
    out = [("content-type", CONTENT_TYPE), ("schema-version", str(SCHEMA_VERSION).encode())]
    if producer:
        out.append(("producer", producer.encode("utf-8")))
    return out


def encode(event: RawEvent) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    """(key, value, headers) of one event."""
    return encode_key(event), encode_value(event), headers(event.producer)


def decode_value(value: bytes | str | dict[str, Any]) -> RawEvent:
    if isinstance(value, dict):
        return RawEvent.model_validate(value)
    return RawEvent.model_validate_json(value)
