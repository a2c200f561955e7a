"""Retry policy written once: which HTTP statuses are transient, backoff with jitter, ``Retry-After``.

Transient (retry, forever, with capped exponential backoff + jitter; the destination's partitions are paused
meanwhile): connection errors, timeouts, 408, 429, 5xx except 501. ``413`` and ``400``/``422`` reject the
batch as a whole, so the runner bisects it to isolate the offending event(s), which then go to the dead-letter
topic. Other 4xx (401, 403, 404, ...) are permanent for every event of the batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from enum import Enum

from pydantic import BaseModel, Field


class Verdict(Enum):
    OK = "ok"
    RETRY = "retry"
    SPLIT = "split"  # permanent for the batch as a whole: bisect to find the bad event(s)
    PERMANENT = "permanent"


DEFAULT_RETRYABLE: frozenset[int] = frozenset({408, 429} | {s for s in range(500, 600) if s != 501})
DEFAULT_SPLIT: frozenset[int] = frozenset({400, 413, 422})


def classify_status(
    status: int,
    retryable: frozenset[int] = DEFAULT_RETRYABLE,
    split: frozenset[int] = DEFAULT_SPLIT,
) -> Verdict:
    """Pure rule: what to do with a whole-request HTTP status."""
    if 200 <= status < 300:
        return Verdict.OK
    if status in retryable:
        return Verdict.RETRY
    if status in split:
        return Verdict.SPLIT
    return Verdict.PERMANENT


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (delta-seconds or HTTP-date); None when absent/invalid."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


class RetryConfig(BaseModel):
    """The ``retry`` block every destination has."""

    initial_backoff_s: float = Field(default=0.2, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    max_retry_after_s: float = Field(default=300.0, gt=0, description="cap on a server's Retry-After")
    request_timeout_s: float = Field(default=10.0, gt=0)


@dataclass
class Backoff:
    """Exponential backoff with equal jitter, honouring the server's ``Retry-After`` (capped)."""

    config: RetryConfig
    attempt: int = 0
    rng: random.Random | None = None

    def next_delay(self, retry_after: float | None = None) -> float:
        base = min(self.config.max_backoff_s, self.config.initial_backoff_s * (2**self.attempt))
        self.attempt += 1
        r = (self.rng or random).uniform(0.5, 1.0)
        delay = base * r
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.config.max_retry_after_s))
        return delay

    def reset(self) -> None:
        self.attempt = 0
