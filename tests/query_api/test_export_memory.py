"""A 100k-row export streams with flat memory: the server's RSS barely moves while ~130 MB flow out."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from benchmarks.query.generate import generate
from tests.query_api.conftest import auth
from tests.query_api.server import rss_bytes, serve

pytestmark = pytest.mark.clickhouse

N = 100_000


def _fill(settings) -> None:  # noqa: ANN001
    """100k realistic rows: the benchmark generator (templates mapped by the sink's row_from_event,
    multiplied by ClickHouse's INSERT ... SELECT), plus 0.1% redelivered duplicates."""
    assert generate(settings, settings.clickhouse_database, total=N, chunk=N)


def _export(base: str, proc, fmt: str) -> tuple[int, int, int]:  # noqa: ANN001
    """Stream one export; returns (bytes, lines, peak RSS growth of the server)."""
    baseline = rss_bytes(proc.pid)
    peak = baseline
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, rss_bytes(proc.pid))
            time.sleep(0.02)

    t = threading.Thread(target=sample)
    t.start()
    total = lines = 0
    try:
        with httpx.stream(
            "GET", base + "/api/events/export", params={"format": fmt}, headers=auth("viewer"), timeout=120
        ) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes(256 * 1024):
                total += len(chunk)
                lines += chunk.count(b"\n")
    finally:
        stop.set()
        t.join()
    mb = 1e6
    print(
        f"{fmt}: {total / mb:.0f} MB streamed, server RSS {baseline / mb:.0f} MB -> peak {peak / mb:.0f} MB"
    )
    return total, lines, peak - baseline


def test_100k_export_streams_with_flat_memory(api_settings) -> None:  # noqa: ANN001
    t0 = time.monotonic()
    _fill(api_settings)
    print(f"filled {N} rows in {time.monotonic() - t0:.1f} s")
    with serve(api_settings) as (base, proc):
        # warm up (imports, first query) so the baseline is the steady state
        httpx.get(
            base + "/api/events", params={"limit": 1}, headers=auth("viewer"), timeout=30
        ).raise_for_status()
        for fmt in ("jsonl", "csv"):
            t0 = time.monotonic()
            total, lines, growth = _export(base, proc, fmt)
            print(f"{fmt}: {time.monotonic() - t0:.1f} s")
            assert lines >= N  # jsonl: one per event; csv: header + one per event
            assert total > 50_000_000
            assert growth < 40_000_000, f"server memory grew by {growth / 1e6:.0f} MB while streaming {fmt}"
