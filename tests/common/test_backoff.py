"""The one backoff helper (auditpipe/backoff.py): bounds, growth, Retry-After, retry_async."""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditpipe.backoff import Backoff, Stopped, parse_retry_after, retry_async


@given(
    initial=st.floats(0.001, 5),
    cap=st.floats(0.01, 60),
    attempts=st.integers(1, 80),
    jitter=st.sampled_from(["full", "equal", "none"]),
    seed=st.integers(0, 2**32),
)
def test_delays_stay_within_the_cap_and_grow(initial, cap, attempts, jitter, seed) -> None:
    b = Backoff(initial_s=initial, cap_s=cap, jitter=jitter, rng=random.Random(seed))
    for n in range(attempts):
        d = b.next_delay()
        base = min(cap, initial * 2**n)
        assert 0 <= d <= base + 1e-9
        if jitter == "equal":
            assert d >= base / 2 - 1e-9
        if jitter == "none":
            assert d == pytest.approx(base)
    assert b.attempt == attempts
    b.reset()
    assert b.attempt == 0


def test_retry_after_is_a_floor_capped_by_max() -> None:
    b = Backoff(initial_s=0.1, cap_s=1, jitter="none", max_retry_after_s=30)
    assert b.next_delay(retry_after_s=7) == 7
    assert b.next_delay(retry_after_s=86_400) == 30
    assert b.next_delay(retry_after_s=None) == pytest.approx(0.4)


def test_parse_retry_after_forms() -> None:
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 12 ") == 12.0
    assert parse_retry_after("Sun, 29 Nov 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Sun, 29 Nov 2026 11:00:00 GMT", now) == 0.0
    for bad in (None, "", "soon", "-3", "1.5e9x"):
        assert parse_retry_after(bad) is None


def test_zero_or_negative_delays_are_refused() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=0)


async def test_retry_async_retries_until_success_and_raises_the_unretryable() -> None:
    calls = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("down")
        return "ok"

    seen: list[float] = []
    out = await retry_async(
        flaky, Backoff(initial_s=0.001, cap_s=0.002), on_retry=lambda e, d: seen.append(d)
    )
    assert out == "ok" and len(calls) == 3 and len(seen) == 2

    async def bad() -> None:
        raise ValueError("permanent")

    with pytest.raises(ValueError):
        await retry_async(bad, Backoff(initial_s=0.001), retryable=lambda e: not isinstance(e, ValueError))


async def test_retry_async_stops_when_asked() -> None:
    stop = asyncio.Event()

    async def never() -> None:
        stop.set()
        raise ConnectionError("down")

    with pytest.raises(Stopped):
        await retry_async(never, Backoff(initial_s=5, cap_s=5), stop=stop)
