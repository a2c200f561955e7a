"""Webhook encoding: the record as is (bytes unchanged; the client joins them into a JSON array), and the
signature rule. Nothing is parsed."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from services.siem_forwarder.webhook.config import WebhookConfig


def sign(secret: bytes, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify(
    secret: bytes, timestamp: str, body: bytes, signature: str, now: float, tolerance_s: float = 300
) -> bool:
    """What a receiver does: constant-time compare, and refuse stale or future timestamps (replays)."""
    try:
        ts = float(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookEncoder:
    needs: tuple[str, ...] = ()

    def __init__(self, config: WebhookConfig) -> None:
        self.config = config

    def encode(self, record: bytes, doc: dict[str, Any] | None) -> bytes:
        return record

    def size(self, item: bytes) -> int:
        return len(item)
