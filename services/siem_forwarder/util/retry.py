"""Retry policy written once: which HTTP statuses are transient, and each destination's backoff (the
shared :mod:`auditpipe.backoff` helper: exponential, jittered, capped, honouring ``Retry-After``).

Transient (retry, forever, with capped exponential backoff + jitter; the destination's partitions are paused
meanwhile): connection errors, timeouts, 408, 429, 5xx except 501. ``413`` and ``400``/``422`` reject the
batch as a whole, so the runner bisects it to isolate the offending event(s), which then go to the dead-letter
topic. Other 4xx (401, 403, 404, ...) are permanent for every event of the batch.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, Field

from auditpipe.backoff import Backoff, parse_retry_after

__all__ = ["Backoff", "RetryConfig", "Verdict", "backoff", "classify_status", "parse_retry_after"]


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


class RetryConfig(BaseModel):
    """The ``retry`` block every destination has."""

    initial_backoff_s: float = Field(default=0.2, gt=0)
    max_backoff_s: float = Field(default=30.0, gt=0)
    max_retry_after_s: float = Field(default=300.0, gt=0, description="cap on a server's Retry-After")
    request_timeout_s: float = Field(default=10.0, gt=0)


def backoff(config: RetryConfig) -> Backoff:
    """The shared helper (:mod:`auditpipe.backoff`) with this destination's ``retry`` block: exponential
    from ``initial_backoff_s`` up to ``max_backoff_s``, each delay x U(0.5, 1) (equal jitter: never an
    immediate retry), a server's ``Retry-After`` as a floor capped by ``max_retry_after_s``."""
    return Backoff(
        initial_s=config.initial_backoff_s,
        cap_s=config.max_backoff_s,
        jitter="equal",
        max_retry_after_s=config.max_retry_after_s,
    )
