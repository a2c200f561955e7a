"""Run the enricher as a real process against the shared broker, and read topics to the end."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

ROOT = Path(__file__).resolve().parents[2]
BOOT = os.environ.get("AUDITPIPE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")


class EnricherProcess:
    """``python -m services.enricher`` with env overrides; stderr (JSON logs) captured to a file."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> EnricherProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.enricher"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait; SIGKILL only if it does not exit in time. Returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def enricher_env(topics: dict[str, str], suffix: str, port: int, **extra: str) -> dict[str, str]:
    from schemas.topics import DEADLETTER, EVENTS, RAW

    env = {
        "AUDITPIPE_ENRICHER__RAW_TOPIC": topics[RAW],
        "AUDITPIPE_ENRICHER__EVENTS_TOPIC": topics[EVENTS],
        "AUDITPIPE_ENRICHER__DEADLETTER_TOPIC": topics[DEADLETTER],
        "AUDITPIPE_ENRICHER__STATE_TOPIC": f"test.enricher.state.{suffix}",
        "AUDITPIPE_ENRICHER__SWITCH_TOPIC": f"test.org-switch.{suffix}",
        "AUDITPIPE_ENRICHER__CONSUMER_GROUP": f"test-enricher-{suffix}",
        "AUDITPIPE_ENRICHER__WEB_PORT": str(port),
        "AUDITPIPE_ENRICHER__DATA_DIR": f"/tmp/auditpipe-enricher-{suffix}",
        "AUDITPIPE_ENRICHER__SESSION_TIMEOUT_S": "6",
        "AUDITPIPE_ENRICHER__COMMIT_INTERVAL_S": "0.5",
    }
    env.update(extra)
    return env


async def produce(topic: str, messages: Iterable[tuple[bytes | None, bytes | None]]) -> int:
    p = AIOKafkaProducer(bootstrap_servers=BOOT, acks="all", linger_ms=5, max_batch_size=512 * 1024)
    await p.start()
    n = 0
    try:
        futs = []
        for key, value in messages:
            futs.append(await p.send(topic, key=key, value=value))
            n += 1
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return n


async def read_all(topic: str) -> list[tuple[bytes | None, bytes | None]]:
    """Every record of ``topic`` from the beginning to its current end (no consumer group)."""
    c = AIOKafkaConsumer(bootstrap_servers=BOOT, enable_auto_commit=False, group_id=None)
    await c.start()
    try:
        cluster = await c._client.fetch_all_metadata()
        parts = cluster.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        if not tps:
            return []
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        ends = await c.end_offsets(tps)
        out: list[tuple[bytes | None, bytes | None]] = []
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending:
            batch = await c.getmany(*pending, timeout_ms=1000, max_records=10_000)
            for msgs in batch.values():
                out.extend((m.key, m.value) for m in msgs)
            for tp in list(pending):
                if await c.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return out
    finally:
        await c.stop()


async def end_offsets_total(topic: str) -> int:
    """Records in ``topic`` (sum of partition end offsets): a cheap progress probe."""
    c = AIOKafkaConsumer(bootstrap_servers=BOOT, group_id=None)
    await c.start()
    try:
        cluster = await c._client.fetch_all_metadata()
        tps = [TopicPartition(topic, p) for p in cluster.partitions_for_topic(topic) or ()]
        return sum((await c.end_offsets(tps)).values()) if tps else 0
    finally:
        await c.stop()


async def topics_matching(*needles: str) -> list[str]:
    c = AIOKafkaConsumer(bootstrap_servers=BOOT, group_id=None)
    await c.start()
    try:
        return sorted(t for t in await c.topics() if any(n in t for n in needles))
    finally:
        await c.stop()


async def wait_for(topic: str, predicate, timeout_s: float, interval_s: float = 0.5):  # noqa: ANN001, ANN201
    """Poll ``read_all(topic)`` until ``predicate(records)`` holds; returns the records."""
    deadline = time.monotonic() + timeout_s
    while True:
        recs = await read_all(topic)
        if predicate(recs) or time.monotonic() > deadline:
            return recs
        await asyncio.sleep(interval_s)


def values(recs: list[tuple[bytes | None, bytes | None]]) -> list[dict]:
    return [orjson.loads(v) for _, v in recs if v is not None]
