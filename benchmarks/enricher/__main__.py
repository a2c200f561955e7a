"""Enricher throughput on this machine: faust worker(s) beside a bare aiokafka pass-through.

``python -m benchmarks.enricher [--events N] [--runs R] [--profile]``

Figures (events/s, median of R runs, each on fresh topics and consumer groups of the shared broker):

- ``rules``: ``Enricher.process`` alone, in this process (decode, validate, scrub, classify, hash, encode);
- ``passthrough``: bare aiokafka consume -> produce of the same raw topic, bytes unchanged, offsets
  committed after the batch's sends are acked: the ceiling for any Kafka-to-Kafka step here;
- ``aiokafka+rules``: the same loop running the enricher's rules (what an aiokafka-based enricher would do);
- ``faust x1`` / ``faust x2``: ``python -m services.enricher`` processes (one, then two in one group),
  timed from their first output record to the last, so start-up and rebalancing are excluded.

``--profile`` runs one faust worker under cProfile and prints where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.common.settings import EnricherSettings, load_settings
from services.enricher.rules.enrich import Enriched, Enricher

ROOT = Path(__file__).resolve().parents[2]
BOOT = load_settings().kafka_bootstrap
PORTS = iter(range(19550, 19599))
PARTITIONS = 6


def raw_event(i: int) -> bytes:
    """~1.1 KB, like the contract example: a console deployment with payload, snapshot, changes."""
    return orjson.dumps(
        {
            "event_id": str(uuid.uuid4()),
            "occurred_at": "2026-11-22T10:00:00Z",
            "org_id": f"org-{i % 50}",
            "project_id": "proj-web",
            "environment_id": "env-production",
            "actor": {"id": "u-42", "name": "Ada Lovelace", "email": "ada@acme.test"},
            "action": "deployment:create",
            "target": {"id": f"dep-{i}", "name": "web v1.4.2 to production"},
            "status": 201,
            "change": "Deployed release 1.4.2 to Production",
            "request": {
                "method": "POST",
                "path": "/api/projects/proj-web/deployments",
                "query": {"dry_run": "false"},
                "payload": {"release": "1.4.2", "environment": "env-production", "api_key": "k-" + str(i)},
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/130.0 Safari/537.36",
                "peer_ip": "10.0.0.5",
                "x_forwarded_for": "203.0.113.7, 10.0.0.5",
            },
            "metadata": {"release": "1.4.2", "commit": "9fceb02d0ae598e95dc970b74767f19372d61af8"},
            "changes": [{"field": "state", "before": "Draft", "after": "Queued"}],
            "snapshot": {"id": f"dep-{i}", "state": "Queued", "release": "1.4.2", "steps": ["a", "b", "c"]},
        }
    )


async def create_topics(*names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOT)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    finally:
        await admin.close()


async def produce(topic: str, n: int) -> None:
    p = AIOKafkaProducer(bootstrap_servers=BOOT, acks="all", linger_ms=10, max_batch_size=1024 * 1024)
    await p.start()
    try:
        futs = [await p.send(topic, key=f"org-{i % 50}".encode(), value=raw_event(i)) for i in range(n)]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def end_total(topic: str, consumer: AIOKafkaConsumer) -> int:
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return sum((await consumer.end_offsets(tps)).values())


async def aiokafka_loop(raw: str, out: str, n: int, rules: Enricher | None) -> float:
    """Consume ``raw`` -> (rules) -> produce ``out``; commit per batch after acks. Returns events/s."""
    consumer = AIOKafkaConsumer(
        raw,
        bootstrap_servers=BOOT,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=2000,
    )
    producer = AIOKafkaProducer(bootstrap_servers=BOOT, acks="all", linger_ms=5, max_batch_size=1024 * 1024)
    await consumer.start()
    await producer.start()
    done = 0
    t0: float | None = None
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=500, max_records=2000)
            if t0 is None and batch:
                t0 = time.perf_counter()
            futs = []
            now = datetime.now(UTC)
            for msgs in batch.values():
                for m in msgs:
                    value = m.value
                    if rules is not None:
                        o = rules.process(
                            m.value,
                            topic=m.topic,
                            partition=m.partition,
                            offset=m.offset,
                            timestamp_ms=m.timestamp,
                            now=now,
                        )
                        value = o.value if isinstance(o, Enriched) else b"{}"
                    futs.append(await producer.send(out, key=m.key, value=value))
                    done += 1
            if futs:
                await asyncio.gather(*futs)
                await consumer.commit()
        return n / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await consumer.stop()
        await producer.stop()


def faust_env(raw: str, out: str, dl: str, group: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "AUDITPIPE_LOG_LEVEL": "WARNING",
        "AUDITPIPE_ENRICHER__RAW_TOPIC": raw,
        "AUDITPIPE_ENRICHER__EVENTS_TOPIC": out,
        "AUDITPIPE_ENRICHER__DEADLETTER_TOPIC": dl,
        "AUDITPIPE_ENRICHER__STATE_TOPIC": f"bench.enricher.state.{group}",
        "AUDITPIPE_ENRICHER__CONSUMER_GROUP": group,
        "AUDITPIPE_ENRICHER__WEB_PORT": str(port),
        "AUDITPIPE_ENRICHER__DATA_DIR": f"{tempfile.gettempdir()}/bench-{group}",
        "AUDITPIPE_ENRICHER__TRUSTED_PROXIES": '["10.0.0.0/8"]',
        "AUDITPIPE_ENRICHER__SESSION_TIMEOUT_S": "6",
    }


async def faust_run(raw: str, n: int, workers: int, profile_to: str | None = None) -> float:
    """Start ``workers`` enricher processes on ``raw``; events/s from first to last output record."""
    tag = uuid.uuid4().hex[:8]
    out, dl, group = f"bench.enricher.out.{tag}", f"bench.enricher.dl.{tag}", f"bench-enricher-{tag}"
    await create_topics(out, dl)
    procs = []
    for _ in range(workers):
        cmd = [sys.executable, "-m", "services.enricher"]
        if profile_to:
            cmd = [sys.executable, "-m", "cProfile", "-o", profile_to, "-m", "services.enricher"]
        procs.append(
            subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once
                cmd,
                cwd=ROOT,
                env=faust_env(raw, out, dl, group, next(PORTS)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    probe = AIOKafkaConsumer(bootstrap_servers=BOOT, group_id=None)
    await probe.start()
    try:
        first_t = first_n = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            total = await end_total(out, probe)
            t = time.perf_counter()
            if first_t is None and total > 0:
                first_t, first_n = t, total
            if total >= n:
                break
            await asyncio.sleep(0.05)
        else:
            raise RuntimeError(f"faust x{workers} did not finish: {total} of {n}")
        return (n - first_n) / (t - first_t) if t > first_t else float("nan")
    finally:
        await probe.stop()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def rules_only(n: int) -> float:
    e = Enricher.from_settings(EnricherSettings(trusted_proxies=["10.0.0.0/8"]))
    values = [raw_event(i) for i in range(n)]
    now = datetime.now(UTC)
    t0 = time.perf_counter()
    for i, v in enumerate(values):
        e.process(v, topic="t", partition=0, offset=i, timestamp_ms=None, now=now)
    return n / (time.perf_counter() - t0)


async def main_async(n: int, runs: int, profile: bool) -> None:
    figures: dict[str, list[float]] = {
        k: [] for k in ("rules", "passthrough", "aiokafka+rules", "faust x1", "faust x2")
    }
    for r in range(runs):
        raw = f"bench.enricher.raw.{uuid.uuid4().hex[:8]}"
        await create_topics(raw, raw + ".pt", raw + ".ar")
        await produce(raw, n)
        figures["rules"].append(rules_only(min(n, 5000)))
        figures["passthrough"].append(await aiokafka_loop(raw, raw + ".pt", n, None))
        rules = Enricher.from_settings(EnricherSettings(trusted_proxies=["10.0.0.0/8"]))
        figures["aiokafka+rules"].append(await aiokafka_loop(raw, raw + ".ar", n, rules))
        figures["faust x1"].append(await faust_run(raw, n, 1))
        figures["faust x2"].append(await faust_run(raw, n, 2))
        print(
            f"run {r + 1}/{runs}: " + ", ".join(f"{k}={v[-1]:,.0f}/s" for k, v in figures.items()), flush=True
        )
    base = statistics.median(figures["passthrough"])
    print(
        f"\nenricher benchmark: {n} events of ~{len(raw_event(0))} B, {PARTITIONS} partitions, "
        f"{os.cpu_count()} cores, median of {runs} runs"
    )
    for k, v in figures.items():
        med = statistics.median(v)
        print(f"  {k:<15} {med:>10,.0f} events/s   ratio to passthrough {med / base:5.2f}")
    if profile:
        prof = f"{tempfile.gettempdir()}/enricher-faust-{uuid.uuid4().hex[:6]}.prof"
        raw = f"bench.enricher.raw.{uuid.uuid4().hex[:8]}"
        await create_topics(raw)
        await produce(raw, n)
        await faust_run(raw, n, 1, profile_to=prof)
        await asyncio.sleep(1)
        print(f"\ncProfile of one faust worker ({prof}), top 25 by cumulative time:")
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        print("top 25 by own time:")
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=5_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    asyncio.run(main_async(a.events, a.runs, a.profile))


if __name__ == "__main__":
    main()
