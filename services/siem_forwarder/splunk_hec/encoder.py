"""Splunk HEC encoding: one ``{"time", "source", "sourcetype", "host", "index", "event"}`` object per event
(``time`` = ``occurred_at`` as epoch seconds with milliseconds); ``event`` is the record's bytes spliced in
unchanged. Requests concatenate the objects. Only ``occurred_at`` is read from the record."""

from __future__ import annotations

from typing import Any

from services.siem_forwarder.splunk_hec.config import MAX_CONTENT_LENGTH, SplunkHecConfig
from services.siem_forwarder.util.common_encoding import check_size, dumps, event_time


class SplunkHecEncoder:
    needs = ("occurred_at", "received_at")

    def __init__(self, config: SplunkHecConfig) -> None:
        self.config = config
        head: dict[str, Any] = {"source": config.source, "sourcetype": config.sourcetype}
        if config.host:
            head["host"] = config.host
        if config.index:
            head["index"] = config.index
        self._head = b"," + dumps(head)[1:-1] + b',"event":'

    def encode(self, record: bytes, doc: dict[str, Any] | None) -> bytes:
        assert doc is not None
        t = dumps(round(event_time(doc).timestamp(), 3))
        return check_size(b'{"time":' + t + self._head + record + b"}", MAX_CONTENT_LENGTH, "HEC event")

    def size(self, item: bytes) -> int:
        return len(item)
