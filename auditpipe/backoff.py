"""One backoff helper for every retry loop of auditpipe: exponential, jittered, capped, ``Retry-After``.

Lives in the SDK package (beside :mod:`auditpipe.wire`) because the client retries too and must not
import the services; the services import it from here. Pure apart from the random jitter and the clock
of :func:`retry_async`.

- ``Backoff.next_delay()`` grows ``initial_s * 2**attempt`` up to ``cap_s``, then applies jitter:
  ``"full"`` (uniform 0..d: spreads a herd of retrying clients best), ``"equal"`` (uniform d/2..d: never
  retries at once), or ``"none"``.
- A server's ``Retry-After`` (seconds, parsed by :func:`parse_retry_after`) is a floor, itself capped by
  ``max_retry_after_s`` so a hostile or broken server cannot park a client for a day.
- :func:`retry_async` runs an operation until it succeeds, an error is not retryable, or ``stop`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal, TypeVar

T = TypeVar("T")
Jitter = Literal["full", "equal", "none"]


@dataclass
class Backoff:
    """Delays for successive retries of one operation (``reset()`` after a success)."""

    initial_s: float = 0.2
    cap_s: float = 30.0
    jitter: Jitter = "equal"
    max_retry_after_s: float = 300.0
    rng: random.Random | None = None
    attempt: int = 0

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.cap_s <= 0:
            raise ValueError("backoff delays must be positive")

    def next_delay(self, retry_after_s: float | None = None) -> float:
        """The delay before the next attempt (and count this attempt)."""
        base = min(self.cap_s, self.initial_s * (2 ** min(self.attempt, 60)))
        self.attempt += 1
        r = self.rng or random
        if self.jitter == "full":
            delay = r.uniform(0.0, base)
        elif self.jitter == "equal":
            delay = base * r.uniform(0.5, 1.0)
        else:
            delay = base
        if retry_after_s is not None and retry_after_s > 0:
            delay = max(delay, min(retry_after_s, self.max_retry_after_s))
        return delay

    def reset(self) -> None:
        self.attempt = 0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date); None if absent/invalid."""
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
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class Stopped(Exception):
    """``stop`` was set before the operation succeeded."""


async def sleep_unless_stopped(delay_s: float, stop: asyncio.Event | None) -> bool:
    """Sleep ``delay_s``; True when ``stop`` was set meanwhile (returns at once then)."""
    if stop is None:
        await asyncio.sleep(delay_s)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)
    return stop.is_set()


async def retry_async(
    op: Callable[[], Awaitable[T]],
    backoff: Backoff,
    *,
    retryable: Callable[[BaseException], bool] = lambda _e: True,
    stop: asyncio.Event | None = None,
    on_retry: Callable[[BaseException, float], None] | None = None,
) -> T:
    """``await op()`` until it succeeds; a non-retryable error is raised; :class:`Stopped` when ``stop``."""
    while True:
        if stop is not None and stop.is_set():
            raise Stopped()
        try:
            return await op()
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not retryable(e):
                raise
            delay = backoff.next_delay()
            if on_retry is not None:
                on_retry(e, delay)
            if await sleep_unless_stopped(delay, stop):
                raise Stopped() from e
