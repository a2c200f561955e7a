"""Splunk HEC encoding: one ``{"time", "host", "source", "sourcetype", "index", "event"}`` object per event
(``time`` = ``occurred_at`` as epoch seconds with milliseconds). Requests concatenate the objects."""

from __future__ import annotations

from typing import Any

from services.siem_forwarder.splunk_hec.config import MAX_CONTENT_LENGTH, SplunkHecConfig
from services.siem_forwarder.util.common_encoding import check_size, dumps, event_time


class SplunkHecEncoder:
    def __init__(self, config: SplunkHecConfig) -> None:
        self.config = config

    def encode(self, doc: dict[str, Any]) -> bytes:
        obj: dict[str, Any] = {
            "time": round(event_time(doc).timestamp(), 3),
            "source": self.config.source,
            "sourcetype": self.config.sourcetype,
            "event": doc,
        }
        if self.config.host:
            obj["host"] = self.config.host
        if self.config.index:
            obj["index"] = self.config.index
        return check_size(dumps(obj), MAX_CONTENT_LENGTH, "HEC event")

    def size(self, item: bytes) -> int:
        return len(item)
