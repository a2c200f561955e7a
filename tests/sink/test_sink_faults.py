"""Faults against real servers: kill -9 of the sink mid-stream, and ClickHouse stopped for 30 s."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest

from services.common.clickhouse import make_client
from services.common.migrations import migrate
from services.common.settings import load_settings
from services.common.stack.manager import CH_MARKER, Stack
from services.common.stack.process import alive, read_pid, stop
from services.sink import metrics as m
from services.sink.service import Sink
from tests.sink.helpers import count, many, produce_spread, sink_settings, wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]
REPO = Path(__file__).resolve().parents[2]


def _spawn_sink(s, log: Path) -> subprocess.Popen:  # noqa: ANN001
    env = dict(os.environ)
    env.update(
        {
            "AUDITPIPE_CLICKHOUSE_URL": s.clickhouse_url,
            "AUDITPIPE_CLICKHOUSE_DATABASE": s.clickhouse_database,
            "AUDITPIPE_SINK__TOPIC": s.sink.topic,
            "AUDITPIPE_SINK__DEADLETTER_TOPIC": s.sink.deadletter_topic,
            "AUDITPIPE_SINK__CONSUMER_GROUP": s.sink.consumer_group,
            "AUDITPIPE_SINK__BATCH_MAX_ROWS": "500",
            "AUDITPIPE_SINK__BATCH_MAX_SECONDS": "0.2",
            "AUDITPIPE_SINK__ARCHIVE_ENABLED": "false",
            "AUDITPIPE_SINK__PORT": str(s.sink.port),
            "AUDITPIPE_SINK__SESSION_TIMEOUT_S": "6",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "services.cli", "sink"],
        cwd=REPO,
        env=env,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def _readyz(port: int) -> dict:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:  # noqa: S310 - loopback
            return orjson.loads(r.read())
    except Exception as e:  # noqa: BLE001
        return {"error": repr(e)}


async def test_kill_9_mid_stream_and_restart_loses_nothing_duplicates_nothing(
    ch_settings, topic_names, tmp_path
) -> None:
    topics = topic_names("audit.events.v1", "audit.deadletter.v1")
    s = sink_settings(ch_settings, topics, port=19611)
    n = 12_000
    values = many(n)
    await produce_spread(s, topics["audit.events.v1"], values[:7_000])
    log = tmp_path / "sink.log"
    proc = _spawn_sink(s, log)
    try:
        more = asyncio.create_task(produce_spread(s, topics["audit.events.v1"], values[7_000:]))
        assert await wait_for(lambda: count(s) >= 2500, 60, every_s=0.2), log.read_text()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)  # mid-stream: batches in flight, offsets partly committed
        proc.wait(10)
        before = count(s)
        assert before < n, "the kill came too late to prove anything"
        await more
        proc = _spawn_sink(s, log)
        assert await wait_for(lambda: count(s) >= n, 120), f"{count(s)} of {n}; " + log.read_text()[-2000:]
        ready = _readyz(s.sink.port)
        assert ready.get("ready") is True and ready.get("kafka") and ready.get("clickhouse"), ready
        await asyncio.sleep(1.0)
        assert count(s) == n
        assert count(s, "uniqExact(event_id)") == n
        want = {orjson.loads(v)["event_id"] for v in values}
        got = {
            str(r[0])
            for r in make_client(s)
            .query(f"SELECT event_id FROM {s.clickhouse_database}.events_dedup")
            .result_rows
        }
        assert got == want
        print(f"\nkilled at {before} distinct rows; raw rows after restart {count(s, 'count()', 'events')}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert proc.returncode == 0 or proc.returncode == -signal.SIGKILL


async def test_clickhouse_down_30s_pauses_waits_and_catches_up(topic_names, tmp_path) -> None:
    """A PRIVATE ClickHouse (port 18623, own state dir) is stopped for 30 s while events keep coming."""
    base = load_settings(clickhouse_url="http://127.0.0.1:18623", stack={"state_dir": tmp_path / "stack"})
    stack = Stack(base)
    topics = topic_names("audit.events.v1", "audit.deadletter.v1")

    def ch_start() -> None:
        stack.ch_up()
        deadline = time.monotonic() + 90
        while stack.ch_version() is None:
            assert time.monotonic() < deadline, "private ClickHouse did not start"
            time.sleep(0.3)

    def ch_stop() -> None:
        pid = read_pid(stack.cdir / "pid")
        if alive(pid, CH_MARKER):
            stop(pid, CH_MARKER, timeout_s=30)
        (stack.cdir / "pid").unlink(missing_ok=True)

    try:
        await asyncio.to_thread(ch_start)
        migrate(make_client(base), "audit_outage")
        s = sink_settings(base.model_copy(update={"clickhouse_database": "audit_outage"}), topics)
        sink = Sink(s)
        await sink.start()
        task = asyncio.create_task(sink.run())
        try:
            first, second = many(3000), many(3000)
            await produce_spread(s, topics["audit.events.v1"], first)
            assert await wait_for(lambda: count(s) >= 3000, 60)
            retries0 = m.RETRIES._value.get()  # noqa: SLF001
            await asyncio.to_thread(ch_stop)
            await produce_spread(s, topics["audit.events.v1"], second)
            await asyncio.sleep(30)
            assert not task.done(), "the sink must wait, not exit"
            assert m.RETRIES._value.get() > retries0  # noqa: SLF001
            assert sink.consumer is not None and sink.consumer.paused(), (
                "fetching must pause while CH is down"
            )
            assert len(sink.batch) <= s.sink.batch_max_rows  # bounded
            await asyncio.to_thread(ch_start)
            assert await wait_for(lambda: count(s) >= 6000, 90), count(s)
            await asyncio.sleep(0.5)
            assert count(s) == 6000 and count(s, "uniqExact(event_id)") == 6000
            assert not sink.consumer.paused()
        finally:
            sink.stop.set()
            await asyncio.wait_for(task, 30)
            await sink.close()
    finally:
        await asyncio.to_thread(ch_stop)
