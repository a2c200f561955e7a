"""RFC 5424 message + RFC 6587 octet-counting frame per event; MSG is the record's bytes unchanged.
Pure functions, tested exhaustively."""

from __future__ import annotations

import functools
import re
import socket
from typing import Any

from services.siem_forwarder.syslog.config import SyslogConfig
from services.siem_forwarder.util.common_encoding import rfc3339_utc, time_text
from services.siem_forwarder.util.delivery import EncodeError
from services.siem_forwarder.util.fields import full

NILVALUE = "-"


_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


def header_field(value: Any, max_len: int) -> str:
    """PRINTUSASCII (33..126), truncated to ``max_len``; empty -> NILVALUE."""
    s = _NOT_PRINTUSASCII.sub("_", str(value or "")[:max_len])
    return s or NILVALUE


def sd_escape(value: str) -> str:
    """PARAM-VALUE escaping (RFC 5424 6.3.3): ``"``, ``\\`` and ``]`` are backslash-escaped."""
    if "\\" not in value and '"' not in value and "]" not in value:
        return value
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


@functools.lru_cache(maxsize=4096)
def msgid(action: Any) -> str:
    """MSGID from the action (few distinct values: cached)."""
    return header_field(action, 32)


def sd_name(name: str) -> str:
    return header_field(name.replace("=", "_").replace('"', "_").replace("]", "_").replace(" ", "_"), 32)


def _get(doc: dict[str, Any], path: tuple[str, ...]) -> Any:
    cur: Any = doc
    for p in path:
        if not isinstance(cur, dict):
            return None
        cur = cur.get(p)
    return cur


def frame(msg: bytes) -> bytes:
    """RFC 6587 octet counting: ``MSG-LEN SP SYSLOG-MSG`` (MSG-LEN in octets, no leading zeros)."""
    return str(len(msg)).encode() + b" " + msg


class SyslogEncoder:
    def __init__(self, config: SyslogConfig) -> None:
        self.config = config
        self.hostname = header_field(config.hostname or socket.gethostname(), 255)
        self.pri = config.facility * 8 + config.severity
        self.app = header_field(config.app_name, 48)
        self.sd_names = [(tuple(path.split(".")), sd_name(path)) for path in config.sd_fields]
        # timestamp, MSGID (action) and the structured-data fields
        self.needs = ("occurred_at", "received_at", "action", *config.sd_fields)
        self._head = f"<{self.pri}>1 "
        self._mid = f" {self.hostname} {self.app} {NILVALUE} "

    def message(self, record: bytes, doc: dict[str, Any] | None) -> bytes:
        doc = doc if doc is not None else full(record)
        ts = rfc3339_utc(time_text(doc))  # RFC 3339 in UTC, at most 6 fraction digits
        params = []
        for path, name in self.sd_names:
            v = _get(doc, path)
            if v is not None:
                params.append(f'{name}="{sd_escape(v if isinstance(v, str) else str(v))}"')
        sd = f"[{self.config.sd_id} {' '.join(params)}]" if params else NILVALUE
        head = f"{self._head}{ts}{self._mid}{msgid(doc.get('action'))} {sd} "
        return head.encode("utf-8") + record

    def encode(self, record: bytes, doc: dict[str, Any] | None) -> bytes:
        msg = self.message(record, doc)
        if len(msg) > self.config.max_message_bytes:
            raise EncodeError(
                "message_too_large",
                f"syslog message is {len(msg)} bytes, over max_message_bytes={self.config.max_message_bytes}",
            )
        return frame(msg)

    def size(self, item: bytes) -> int:
        return len(item)
