"""``python -m benchmarks.e2e``: the whole pipeline on this machine, ingest to queryable.

Same run, private ports (19950-19960), real processes (`auditpipe run`: ingest, enricher, sink, query API):

1. ceiling: the same event bytes produced to and consumed from a fresh topic with bare aiokafka
   (acks=all) — what the broker and one Python client can move on this box;
2. sustained rate: N events posted to the ingest as fast as 4 concurrent clients can (batches of 500),
   timed from the first request to the moment the last one is queryable in ClickHouse;
3. latency at 50 % and 90 % of that rate for 20 s each: every event's ``occurred_at`` is its send time;
   ``inserted_at`` (set by ClickHouse when the insert lands) minus ``occurred_at`` is ingest-to-queryable
   latency; p50/p99 from ClickHouse's quantiles over that phase's events.

Prints a markdown table; medians where a figure is repeated.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from schemas.topics import TopicSpec
from services.common.clickhouse import make_client
from services.common.kafka import ensure_topics, make_consumer, make_producer
from services.supervisor.local import LocalPipeline, Ports

PORTS = Ports.offset(19950)
BATCH = 500


def event(i: int, org: str, now: str | None = None) -> dict:
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": now or datetime.now(UTC).isoformat(),
        "org_id": f"{org}-{i % 12}",
        "project_id": f"proj-{i % 40}",
        "environment_id": f"env-{i % 3}",
        "actor": {
            "type": "user",
            "id": f"u-{i % 1000}",
            "name": f"User {i % 1000}",
            "email": "u@example.test",
        },
        "action": ("deployment:create", "service:update", "variable:update", "environment:delete")[i % 4],
        "target": {"id": f"t-{i % 10000}", "name": f"target {i % 10000}"},
        "status": 200,
        "change": "benchmark event with a realistic amount of text in the change description",
        "request": {
            "method": "POST",
            "path": f"/api/projects/proj-{i % 40}/deployments",
            "payload": {"release": f"1.{i % 10}.{i % 100}", "notes": "x" * 300, "password": "hunter2"},
            "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/130.0",
            "peer_ip": "10.0.0.7",
            "x_forwarded_for": f"198.51.100.{i % 250}, 10.0.0.7",
        },
        "metadata": {"bench": "e2e"},
    }


async def ceiling(settings, n: int) -> float:  # noqa: ANN001
    topic = f"bench.e2e.ceiling.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [TopicSpec(topic, 6, 1, 3_600_000, "producer", [], [], "")])
    payloads = [(orjson.dumps(event(i, "ceil")), f"ceil-{i % 12}".encode()) for i in range(n)]
    prod = make_producer(settings)
    cons = make_consumer(settings, topic, group_id=f"bench-{uuid.uuid4().hex[:6]}")
    await prod.start()
    await cons.start()
    t0 = time.perf_counter()
    try:
        futs = [await prod.send(topic, v, key=k) for v, k in payloads]
        await asyncio.gather(*futs)
        got = 0
        while got < n:
            for msgs in (await cons.getmany(timeout_ms=2000, max_records=10_000)).values():
                got += len(msgs)
        await cons.commit()
        return n / (time.perf_counter() - t0)
    finally:
        await prod.stop()
        await cons.stop()


async def post_all(url: str, token: str, batches: list[bytes], concurrency: int = 4) -> None:
    q: asyncio.Queue[bytes] = asyncio.Queue()
    for b in batches:
        q.put_nowait(b)

    async def worker() -> None:
        async with httpx.AsyncClient(timeout=60) as h:
            while not q.empty():
                body = q.get_nowait()
                while True:
                    r = await h.post(
                        url,
                        content=body,
                        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                    )
                    if r.status_code == 202:
                        break
                    await asyncio.sleep(0.2)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def paced(url: str, token: str, rate: float, seconds: float, org: str) -> int:
    """Send at ``rate`` events/s for ``seconds``, in batches sized for ~10 requests/s."""
    per = max(1, min(BATCH, int(rate / 10)))
    sent = 0
    t0 = time.perf_counter()
    pending: set[asyncio.Task] = set()
    async with httpx.AsyncClient(timeout=60) as h:
        while time.perf_counter() - t0 < seconds:
            batch = [event(sent + j, org) for j in range(per)]
            body = orjson.dumps(batch)
            pending.add(
                asyncio.create_task(
                    h.post(
                        url,
                        content=body,
                        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                    )
                )
            )
            pending = {t for t in pending if not t.done()}
            sent += per
            nxt = t0 + sent / rate
            await asyncio.sleep(max(0, nxt - time.perf_counter()))
        if pending:
            await asyncio.gather(*pending)
    return sent


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=int(os.environ.get("BENCH_E2E_EVENTS", "100000")))
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="auditpipe-bench-e2e-") as tmp:
        pipe = LocalPipeline(
            state_dir=Path(tmp),
            ports=PORTS,
            services=("ingest", "enricher", "sink", "api"),
            extra_env={"AUDITPIPE_LOG_LEVEL": "WARNING"},
        )
        s = pipe.settings()
        try:
            pipe.up()
            ceil = asyncio.run(ceiling(s, min(args.events, 100_000)))
            pipe.start(wait_s=240)
            ch = make_client(s, database=s.clickhouse_database)
            url = f"http://127.0.0.1:{PORTS.ingest}/v1/events/batch"

            def count(prefix: str) -> int:
                return int(
                    ch.query(
                        "SELECT count() FROM events WHERE startsWith(org_id, {p:String})",
                        parameters={"p": prefix},
                    ).result_rows[0][0]
                )

            # Warm-up: every consumer has joined its group and every connection exists.
            asyncio.run(
                post_all(url, pipe.ingest_token, [orjson.dumps([event(i, "warm") for i in range(100)])])
            )
            while count("warm") < 100:
                time.sleep(0.2)

            now = datetime.now(UTC).isoformat()
            batches = [
                orjson.dumps([event(i + j, "sust", now) for j in range(BATCH)])
                for i in range(0, args.events, BATCH)
            ]
            t0 = time.perf_counter()
            asyncio.run(post_all(url, pipe.ingest_token, batches))
            t_ingested = time.perf_counter() - t0
            while count("sust") < args.events:
                time.sleep(0.1)
            t_all = time.perf_counter() - t0
            sustained = args.events / t_all

            lat = {}
            for pct in (50, 90):
                org = f"lat{pct}"
                n = asyncio.run(
                    paced(url, pipe.ingest_token, sustained * pct / 100, args.latency_seconds, org)
                )
                deadline = time.time() + 300
                while count(org) < n and time.time() < deadline:
                    time.sleep(0.2)
                q = ch.query(
                    "SELECT quantiles(0.5, 0.99)(dateDiff('millisecond', occurred_at, inserted_at)) "
                    "FROM events WHERE startsWith(org_id, {p:String})",
                    parameters={"p": org},
                ).result_rows[0][0]
                lat[pct] = (q[0] / 1000, q[1] / 1000, n)
        finally:
            pipe.down()

    print("\n## End to end (ingest -> enricher -> sink -> queryable), this machine\n")
    print("| figure | value |")
    print("|---|---|")
    print(f"| ceiling: bare aiokafka produce+consume, same bytes | {ceil:,.0f} events/s |")
    print(f"| sustained ingest-to-queryable ({args.events:,} events) | {sustained:,.0f} events/s |")
    print(f"| ratio sustained / ceiling | {sustained / ceil:.2f} |")
    ingest_rate = args.events / t_ingested
    print(f"| time for ingest to answer 202 for all | {t_ingested:.1f} s ({ingest_rate:,.0f} events/s) |")
    for pct, (p50, p99, n) in lat.items():
        print(f"| latency at {pct} % of sustained ({n:,} events) | p50 {p50:.2f} s, p99 {p99:.2f} s |")
    met = "met" if sustained >= 20000 and lat[90][1] < 2 else "not met"
    print(f"| target | 20,000 events/s with p99 < 2 s: {met} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
