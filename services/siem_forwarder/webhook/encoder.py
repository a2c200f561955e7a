"""Webhook encoding: the event JSON as is (after field mapping), and the signature rule."""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

from services.siem_forwarder.util.common_encoding import dumps
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
    def __init__(self, config: WebhookConfig) -> None:
        self.config = config

    def encode(self, doc: dict[str, Any]) -> bytes:
        return dumps(doc)

    def size(self, item: bytes) -> int:
        return len(item)
