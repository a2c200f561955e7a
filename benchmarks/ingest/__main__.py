"""``python -m benchmarks.ingest``: throughput and cost of the ingest paths, and the middleware's added
latency, beside ceilings measured in the same run.

Same run, same machine, a fresh topic of 6 partitions on the local broker (deleted at the end):

1. ceilings: a bare aiokafka producer (the ingest's settings: acks=all, idempotent, zstd) sending **the
   very bytes the ingest writes** (the envelopes, one record per request and org) and, for comparison,
   the same events as one record each, waiting for every acknowledgement; CPU of this process;
2. HTTP: ``auditpipe ingest`` under uvicorn in a subprocess (127.0.0.1:19410), 1 and 2 worker processes,
   POST /v1/events/batch with 500 events per request, 4 requests in flight; a 202 means every event was
   acknowledged by Kafka; CPU of the ingest's processes (all workers) from /proc;
3. direct Kafka: ``AsyncAuditClient("kafka")`` emitting the same events (validation, buffering, envelopes);
   its ceiling is the bare producer sending the envelopes it writes;
4. middleware: a Starlette app with one POST route, called in-process (httpx ASGITransport) with and
   without ``AuditMiddleware`` (the client in kafka mode really delivering); per-request p50/p99 and
   the difference.

Each figure is the median of ``--runs`` runs; ratios are medians of the per-run ratios.
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
from auditpipe.wire import encode, encode_value, envelopes
from benchmarks.measure import self_cpu_s, tree_cpu_s
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


def ingest_records(events: list[dict], per: int) -> list[tuple[bytes, bytes, list]]:
    """The records the ingest writes for ``events`` posted ``per`` to a request (envelopes per org), or
    one record per event when ``per`` is 1."""
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    out = []
    for i in range(0, len(events), per):
        evs = [
            stamp(
                RawEvent.model_validate(e), producer="b", peer_ip="127.0.0.1", x_forwarded_for=None, now=now
            )
            for e in events[i : i + per]
        ]
        if per == 1:
            out.append(encode(evs[0]))
        else:
            out += [m for m, _ in envelopes((e, encode_value(e)) for e in evs)]
    return out


async def bare_producer(settings, topic: str, msgs: list[tuple[bytes, bytes, list]], n: int) -> dict:  # noqa: ANN001
    p = make_producer(settings)
    await p.start()
    try:
        c0, t0 = self_cpu_s(), time.perf_counter()
        futs = [await p.send(topic, value=v, key=k, headers=h) for k, v, h in msgs]
        await asyncio.gather(*futs)
        wall, cpu = time.perf_counter() - t0, self_cpu_s() - c0
        return {"events_s": n / wall, "cpu_us": cpu * 1e6 / n}
    finally:
        await p.stop()


async def http_ingest(url: str, events: list[dict], pids: list[int], concurrency: int = 4) -> dict:
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

        c0, t0 = sum(tree_cpu_s(p) for p in pids), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t0, sum(tree_cpu_s(p) for p in pids) - c0
        return {"events_s": len(events) / wall, "cpu_us": cpu * 1e6 / len(events)}


async def direct_client(settings, topic: str, events: list[dict]) -> dict:  # noqa: ANN001
    client = AsyncAuditClient(
        "kafka",
        bootstrap_servers=settings.kafka_bootstrap,
        topic=topic,
        batch_size=BATCH,
        flush_at_exit=False,
    )
    c0, t0 = self_cpu_s(), time.perf_counter()
    for e in events:
        await client.emit(e)
    await client.close(timeout_s=120)
    wall, cpu = time.perf_counter() - t0, self_cpu_s() - c0
    return {"events_s": len(events) / wall, "cpu_us": cpu * 1e6 / len(events)}


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
    await ensure_topics(
        s, [TopicSpec(topic, 6, 1, 3_600_000, "producer", [], [], "", max_message_bytes=8 << 20)]
    )
    events = make_events(args.events)
    size = statistics.mean(len(orjson.dumps(e)) for e in events[:100])
    print(f"events: {args.events} x {size:.0f} B, batches of {BATCH}, runs: {args.runs}, topic {topic}")
    res: dict[str, list[dict]] = {}

    def add(k: str, v: dict) -> None:
        res.setdefault(k, []).append(v)

    for workers in (1, 2):
        proc = start_ingest(s, topic, workers)
        try:
            for _r in range(args.runs):
                evs = make_events(args.events)
                add("bare, envelopes", await bare_producer(s, topic, ingest_records(evs, BATCH), len(evs)))
                singles = ingest_records(evs, 1)
                add("bare, one record per event", await bare_producer(s, topic, singles, len(evs)))
                add(f"http x{workers}", await http_ingest(f"http://127.0.0.1:{PORT}", evs, [proc.pid]))
        finally:
            proc.terminate()
            proc.wait(30)
    for _r in range(args.runs):
        evs = make_events(args.events)
        add("client kafka mode", await direct_client(s, topic, evs))
        add("bare, client's envelopes", await bare_producer(s, topic, ingest_records(evs, BATCH), len(evs)))
    med = {k: {m: statistics.median(x[m] for x in v) for m in ("events_s", "cpu_us")} for k, v in res.items()}
    ceiling = med["bare, envelopes"]["events_s"]
    print()
    print("| path | events/s | CPU-µs per event (its processes) | ratio to the bare producer, same bytes |")
    print("|---|---|---|---|")
    for k, v in med.items():
        base = med["bare, client's envelopes"]["events_s"] if k.startswith("client") else ceiling
        print(f"| {k} | {v['events_s']:,.0f} | {v['cpu_us']:.1f} | {v['events_s'] / base:.2f} |")
    client = med["client kafka mode"]["events_s"] / med["bare, client's envelopes"]["events_s"]
    print(
        f"\nHTTP batch, 1 process: {med['http x1']['events_s'] / ceiling:.2f} of the bare producer of the "
        f"same bytes (target >= 0.5); client kafka mode: {client:.2f} (target >= 0.6)"
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
    ap.add_argument("--requests", type=int, default=2_000, help="middleware requests per variant")
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
