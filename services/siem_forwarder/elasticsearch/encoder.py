"""Bulk ``create`` pair per event, ``_id = event_id``; the document adds ECS-style fields (``@timestamp``,
``event.action``, ``user.*``, ``source.ip``) beside the event under ``audit``, the record's bytes spliced
in unchanged (Elasticsearch keeps ``_source`` as sent)."""

from __future__ import annotations

from typing import Any

from services.siem_forwarder.elasticsearch.config import ElasticsearchConfig
from services.siem_forwarder.util.common_encoding import dumps, event_time, with_member
from services.siem_forwarder.util.delivery import EncodeError
from services.siem_forwarder.util.fields import full


class ElasticsearchEncoder:
    needs = ("event_id", "occurred_at", "received_at", "action", "event_type", "org_id", "actor", "client_ip")

    def __init__(self, config: ElasticsearchConfig) -> None:
        self.config = config

    def encode(self, record: bytes, doc: dict[str, Any] | None) -> bytes:
        doc = doc if doc is not None else full(record)
        eid = doc.get("event_id")
        if not eid:
            raise EncodeError("missing_event_id", "event_id is required as the document _id")
        actor = doc.get("actor") or {}
        body: dict[str, Any] = {
            "@timestamp": event_time(doc).isoformat(),
            "event": {
                "id": eid,
                "action": doc.get("action"),
                "type": doc.get("event_type"),
                "kind": "event",
                "category": "configuration",
            },
            "organization": {"id": doc.get("org_id")},
            "user": {"id": actor.get("id"), "name": actor.get("name"), "email": actor.get("email")},
        }
        if doc.get("client_ip"):
            body["source"] = {"ip": doc["client_ip"]}
        action = dumps({"create": {"_index": self.config.index, "_id": eid}})
        return action + b"\n" + with_member(body, "audit", record) + b"\n"

    def size(self, item: bytes) -> int:
        return len(item)
