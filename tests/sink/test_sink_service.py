"""``run_sink`` as ``auditpipe sink`` runs it: health/metrics endpoints, the archive schedule, clean stop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.sink.service import run_sink
from tests.sink.helpers import count, enriched, insert_events, many, produce_spread, sink_settings, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]


async def test_sink_serves_health_metrics_and_runs_the_archive_schedule(
    ch_settings, topic_names, tmp_path
) -> None:
    topics = topic_names("audit.events.v1", "audit.deadletter.v1", "audit.raw.v1")
    s = sink_settings(ch_settings, topics, port=19631, archive_enabled=True, archive_interval_s=1.0)
    s = s.model_copy(
        update={
            "retention": s.retention.model_copy(
                update={
                    "archive_dir": tmp_path / "arch",
                    "default_days": 30,
                    "audit_topic": topics["audit.raw.v1"],
                }
            )
        }
    )
    old_day = datetime.now(UTC) - timedelta(days=45)
    insert_events(s, [enriched(i, org="org-s", occurred_at=old_day) for i in range(7)], inserted_at=old_day)
    stop = asyncio.Event()
    task = asyncio.create_task(run_sink(s, stop))
    try:
        await produce_spread(s, topics["audit.events.v1"], many(500))
        assert await wait_for(lambda: count(s) == 500, 60), count(s)  # 7 archived away, 500 landed
        assert await wait_for(lambda: any((tmp_path / "arch").rglob("*.manifest.json")), 30)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{s.sink.port}") as http:
            assert (await http.get("/healthz")).status_code == 200
            ready = await http.get("/readyz")
            assert ready.status_code == 200 and ready.json()["kafka"] and ready.json()["clickhouse"]
            body = (await http.get("/metrics")).text
        for name in (
            "auditpipe_sink_rows_inserted_total",
            "auditpipe_sink_batches_total",
            "auditpipe_sink_insert_duration_seconds_bucket",
            "auditpipe_sink_last_success_timestamp_seconds",
            "auditpipe_sink_archived_rows_total",
            "auditpipe_consumer_lag_messages",
        ):
            assert name in body, name
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)  # clean exit on stop (SIGTERM sets the same event)
