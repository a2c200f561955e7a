"""Datadog log item: reserved attributes (``ddsource``, ``service``, ``hostname``, ``ddtags``, ``message``,
``date``) plus the event under ``audit`` so it is searchable as ``@audit.*`` facets; ``audit`` is the
record's bytes spliced in unchanged. ``message`` stays a short human sentence (Datadog's log explorer
shows it; Datadog would parse a JSON message into attributes anyway, so it gains nothing over ``audit``).
Tags carry org/project/environment/action for fast filtering."""

from __future__ import annotations

from typing import Any

from services.siem_forwarder.datadog.config import MAX_LOG_BYTES, DatadogConfig
from services.siem_forwarder.util.common_encoding import check_size, event_time, with_member
from services.siem_forwarder.util.fields import full


def _tag(v: Any) -> str:
    return str(v).replace(",", "_").replace(" ", "_")


class DatadogEncoder:
    needs = (
        *("org_id", "project_id", "environment_id", "action", "event_type", "change", "actor"),
        *("occurred_at", "received_at", "client_ip"),
    )

    def __init__(self, config: DatadogConfig) -> None:
        self.config = config

    def encode(self, record: bytes, doc: dict[str, Any] | None) -> bytes:
        doc = doc if doc is not None else full(record)
        tags = list(self.config.tags)
        for key in ("org_id", "project_id", "environment_id", "action", "event_type"):
            if doc.get(key):
                tags.append(f"{key}:{_tag(doc[key])}")
        actor = doc.get("actor") or {}
        item: dict[str, Any] = {
            "ddsource": self.config.ddsource,
            "service": self.config.service,
            "ddtags": ",".join(tags),
            "message": doc.get("change")
            or f"{actor.get('name') or actor.get('id') or 'system'} {doc.get('action')}",
            "date": event_time(doc).isoformat(),
        }
        if self.config.hostname:
            item["hostname"] = self.config.hostname
        if doc.get("client_ip"):
            item["network"] = {"client": {"ip": doc["client_ip"]}}
        if actor.get("id"):
            item["usr"] = {"id": actor.get("id"), "name": actor.get("name"), "email": actor.get("email")}
        return check_size(with_member(item, "audit", record), MAX_LOG_BYTES, "Datadog log")

    def size(self, item: bytes) -> int:
        return len(item)
