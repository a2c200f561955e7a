"""``python -m benchmarks.ingest``: throughput of the ingest paths and the middleware's added latency.

Same run, same machine, a fresh topic of 6 partitions on the local broker (deleted at the end):

1. ceiling: a bare aiokafka producer (acks=all, idempotent, lz4 — the ingest's settings) sending the very
   bytes the ingest would send, 1 KB events, waiting for every acknowledgement;
2. HTTP: ``auditpipe ingest`` under uvicorn in a subprocess (127.0.0.1:19410), POST /v1/events/batch with
   500 events per request, 4 requests in flight; a 202 means every event was acknowledged by Kafka;
3. direct Kafka: ``AsyncAuditClient("kafka")`` emitting the same events (validation, buffering, batching);
4. middleware: a Starlette app with one POST route, called in-process (httpx ASGITransport) with and
   without ``AuditMiddleware`` (the client in kafka mode really delivering); per-request p50/p99 and
   the difference.

Each throughput figure is the median of ``--runs`` runs; the ratio to the bare producer is printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
from aiokafka.admin import AIOKafkaAdminClient

from auditpipe import AsyncAuditClient, AuditMiddleware
from auditpipe.wire import encode
from schemas.events_v1 import RawEvent
from schemas.topics import TopicSpec
from services.common.kafka import ensure_topics, make_producer
from services.common.settings import load_settings
from services.ingest.auth import hash_token
from services.ingest.validation import stamp

PORT = 19410
BATCH = 500
TOKEN = "bench-token"
EXAMPLE = (
    Path(__file__).resolve().parents[2]
    / "schemas"
    / "examples"
    / "raw"
    / "deployment_create_user_console.json"
)


def make_events(n: int) -> list[dict]:
    """~1 KB events (compact JSON as sent), 8 orgs."""
    base = json.loads(EXAMPLE.read_text())
    out = []
    for i in range(n):
        ev = dict(base, org_id=f"org-{i % 8}", event_id=str(uuid.uuid4()))
        size = len(orjson.dumps(ev))
        ev["change"] = "x" * max(0, 1000 - size - 12)
        out.append(ev)
    return out


async def bare_producer(settings, topic: str, events: list[dict]) -> float:  # noqa: ANN001
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    msgs = [
        encode(
            stamp(
                RawEvent.model_validate(e),
                producer="bench",
                peer_ip="127.0.0.1",
                x_forwarded_for=None,
                now=now,
            )
        )
        for e in events
    ]
    p = make_producer(settings)
    await p.start()
    try:
        t0 = time.perf_counter()
        futs = [await p.send(topic, value=v, key=k, headers=h) for k, v, h in msgs]
        await asyncio.gather(*futs)
        return len(events) / (time.perf_counter() - t0)
    finally:
        await p.stop()


async def http_ingest(url: str, events: list[dict], concurrency: int = 4) -> float:
    bodies = [orjson.dumps(events[i : i + BATCH]) for i in range(0, len(events), BATCH)]
    headers = {"authorization": f"Bearer {TOKEN}", "content-type": "application/json"}
    queue = list(reversed(bodies))
    async with httpx.AsyncClient(timeout=60) as c:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                r = await c.post(f"{url}/v1/events/batch", content=body, headers=headers)
                if r.status_code != 202:
                    raise RuntimeError(f"ingest answered {r.status_code}: {r.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return len(events) / (time.perf_counter() - t0)


async def direct_client(settings, topic: str, events: list[dict]) -> float:  # noqa: ANN001
    client = AsyncAuditClient(
        "kafka",
        bootstrap_servers=settings.kafka_bootstrap,
        topic=topic,
        batch_size=BATCH,
        flush_at_exit=False,
    )
    t0 = time.perf_counter()
    for e in events:
        await client.emit(e)
    await client.close(timeout_s=120)
    return len(events) / (time.perf_counter() - t0)


async def middleware_latency(settings, topic: str, n: int) -> tuple[float, float, float, float]:  # noqa: ANN001
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def create(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True, **(await request.json())}, status_code=201)

    def app(with_mw: bool, client: AsyncAuditClient | None) -> Starlette:
        a = Starlette(routes=[Route("/api/projects/{p}/deployments", create, methods=["POST"])])
        if with_mw:
            a.add_middleware(
                AuditMiddleware,
                client=client,
                org_id=lambda r: r.headers.get("x-org"),
                actor=lambda r: {"type": "user", "id": "u-1"},
            )
        return a

    body = {"environment": "prod", "release": "1.2.3", "variables": {"a": 1, "b": [1, 2, 3]}}

    async def run(a: Starlette) -> list[float]:
        lat = []
        transport = httpx.ASGITransport(app=a, client=("10.0.0.1", 1234))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as c:
            for i in range(n + 200):
                t0 = time.perf_counter()
                r = await c.post(
                    f"/api/projects/p-{i}/deployments?x=1", json=body, headers={"x-org": "org-1"}
                )
                dt = time.perf_counter() - t0
                assert r.status_code == 201
                if i >= 200:  # warm-up
                    lat.append(dt)
        return lat

    client = AsyncAuditClient(
        "kafka", bootstrap_servers=settings.kafka_bootstrap, topic=topic, flush_at_exit=False
    )
    without = await run(app(False, None))
    with_ = await run(app(True, client))
    await client.close(timeout_s=60)

    def q(xs: list[float], p: float) -> float:
        return statistics.quantiles(xs, n=100)[int(p) - 1] * 1e6

    return q(without, 50), q(without, 99), q(with_, 50), q(with_, 99)


def start_ingest(settings, topic: str, workers: int = 1) -> subprocess.Popen:  # noqa: ANN001
    env = dict(os.environ)
    env.update(
        AUDITPIPE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        AUDITPIPE_INGEST__TOPIC=topic,
        AUDITPIPE_INGEST__PORT=str(PORT),
        AUDITPIPE_INGEST__TOKENS=json.dumps(
            [{"producer": "bench", "sha256": hash_token(TOKEN), "orgs": ["*"]}]
        ),
        AUDITPIPE_LOG_LEVEL="WARNING",
    )
    exe = Path(sys.executable).with_name("auditpipe")
    proc = subprocess.Popen([str(exe), "ingest", "--workers", str(workers)], env=env)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.terminate()
    raise RuntimeError("ingest did not become ready")


async def main_async(args: argparse.Namespace) -> None:
    s = load_settings()
    topic = f"bench.ingest.{uuid.uuid4().hex[:8]}"
    await ensure_topics(s, [TopicSpec(topic, 6, 1, 3_600_000, "producer", [], [], "")])
    events = make_events(args.events)
    size = statistics.mean(len(orjson.dumps(e)) for e in events[:100])
    print(f"events: {args.events} x {size:.0f} B, batches of {BATCH}, runs: {args.runs}, topic {topic}")
    proc = start_ingest(s, topic, args.workers)
    res: dict[str, list[float]] = {"bare_http": [], "http": [], "bare_client": [], "client": []}
    try:
        for r in range(args.runs):
            evs = make_events(args.events)
            res["bare_http"].append(await bare_producer(s, topic, evs))
            res["http"].append(await http_ingest(f"http://127.0.0.1:{PORT}", make_events(args.events)))
            res["bare_client"].append(await bare_producer(s, topic, evs))
            res["client"].append(await direct_client(s, topic, make_events(args.events)))
            print(f"run {r + 1}: " + ", ".join(f"{k}={v[-1]:,.0f}/s" for k, v in res.items()))
    finally:
        proc.terminate()
        proc.wait(30)
    med = {k: statistics.median(v) for k, v in res.items()}
    r_http = statistics.median(h / b for h, b in zip(res["http"], res["bare_http"], strict=True))
    r_client = statistics.median(c / b for c, b in zip(res["client"], res["bare_client"], strict=True))
    print()
    print("| path | events/s (median) | bare aiokafka, same runs (median) | ratio (median of per-run) |")
    print("|---|---|---|---|")
    print(
        f"| POST /v1/events/batch (uvicorn, {args.workers} proc) | {med['http']:,.0f} "
        f"| {med['bare_http']:,.0f} "
        f"| {r_http:.2f} |"
    )
    print(
        f"| AsyncAuditClient kafka mode | {med['client']:,.0f} | {med['bare_client']:,.0f} | {r_client:.2f} |"
    )

    lat = [await middleware_latency(s, topic, args.requests) for _ in range(args.runs)]
    p50_0, p99_0, p50_1, p99_1 = (statistics.median(x[i] for x in lat) for i in range(4))
    print()
    print(f"middleware ({args.requests} requests x {args.runs} runs, in-process ASGI, medians):")
    print("| | p50 µs | p99 µs |")
    print("|---|---|---|")
    print(f"| without middleware | {p50_0:,.0f} | {p99_0:,.0f} |")
    print(f"| with AuditMiddleware | {p50_1:,.0f} | {p99_1:,.0f} |")
    print(f"| added | {p50_1 - p50_0:,.0f} | {p99_1 - p99_0:,.0f} |")

    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    await admin.start()
    try:
        await admin.delete_topics([topic])
    finally:
        await admin.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ingest")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=1, help="ingest processes (uvicorn workers)")
    ap.add_argument("--requests", type=int, default=2_000, help="middleware requests per variant")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
