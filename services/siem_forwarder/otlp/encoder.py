"""One OTLP ``LogRecord`` (JSON mapping) per event; the client wraps records in resource/scope.

Mapping: ``timeUnixNano`` = occurred_at, ``observedTimeUnixNano`` = received_at, ``eventName`` = action,
severity INFO (9), ``body`` = the record as a JSON string (its text unchanged once the string is
decoded), attributes after the OpenTelemetry semantic
conventions where one exists (``enduser.id``, ``client.address``, ``event.id``) and ``audit.*`` otherwise.
"""

from __future__ import annotations

from typing import Any

from services.siem_forwarder.otlp.config import OtlpConfig
from services.siem_forwarder.util.common_encoding import dumps, event_time, parse_ts
from services.siem_forwarder.util.delivery import EncodeError
from services.siem_forwarder.util.fields import full

SEVERITY_INFO = 9


def _nanos(doc: dict[str, Any], key: str) -> str:
    dt = parse_ts(doc.get(key)) if doc.get(key) else event_time(doc)
    return str(int(dt.timestamp() * 1_000_000) * 1000)


def attr(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        v: dict[str, Any] = {"boolValue": value}
    elif isinstance(value, int):
        v = {"intValue": str(value)}
    else:
        v = {"stringValue": str(value)}
    return {"key": key, "value": v}


class OtlpEncoder:
    needs = (
        *("event_id", "org_id", "project_id", "environment_id", "action", "event_type", "source"),
        *("status", "target", "actor", "client_ip", "content_hash", "occurred_at", "received_at"),
    )

    def __init__(self, config: OtlpConfig) -> None:
        self.config = config

    def encode(self, record: bytes, doc: dict[str, Any] | None) -> bytes:
        doc = doc if doc is not None else full(record)
        try:
            text = record.decode("utf-8")
        except UnicodeDecodeError:
            raise EncodeError("invalid_json", "record is not UTF-8") from None
        actor = doc.get("actor") or {}
        target = doc.get("target") or {}
        pairs: list[tuple[str, Any]] = [
            ("event.id", doc.get("event_id")),
            ("audit.org_id", doc.get("org_id")),
            ("audit.project_id", doc.get("project_id")),
            ("audit.environment_id", doc.get("environment_id")),
            ("audit.action", doc.get("action")),
            ("audit.event_type", doc.get("event_type")),
            ("audit.source", doc.get("source")),
            ("audit.status", doc.get("status")),
            ("audit.target.type", target.get("type")),
            ("audit.target.id", target.get("id")),
            ("audit.actor.type", actor.get("type")),
            ("enduser.id", actor.get("id")),
            ("client.address", doc.get("client_ip")),
            ("audit.content_hash", doc.get("content_hash")),
        ]
        record = {
            "timeUnixNano": _nanos(doc, "occurred_at"),
            "observedTimeUnixNano": _nanos(doc, "received_at"),
            "severityNumber": SEVERITY_INFO,
            "severityText": "INFO",
            "eventName": str(doc.get("action") or ""),
            "body": {"stringValue": text},
            "attributes": [attr(k, v) for k, v in pairs if v is not None],
        }
        return dumps(record)

    def size(self, item: bytes) -> int:
        return len(item)
