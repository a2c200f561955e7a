"""Events/s through the forwarder (Kafka -> decode -> encode -> deliver -> commit) to a local Splunk HEC
receiver and to Debian's rsyslog, each beside a bare client sending the same pre-encoded payloads in the
same batches (httpx POSTs / raw TCP writes) in the same run: the ceiling. Medians of REPS runs; the ratio
forwarder/bare is printed. The HEC receiver shares this process's event loop with both senders (same
handicap for both); rsyslog is its own process. Bounded to ~1-2 minutes.

    .venv/bin/python -m benchmarks.forwarder [--events 20000] [--reps 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from schemas.topics import EVENTS, TopicSpec, load_topics
from services.common.kafka import ensure_topics, make_producer
from services.common.logging import configure_logging
from services.common.settings import load_settings
from services.siem_forwarder.config import ForwarderConfig
from services.siem_forwarder.service import dead_letter_specs
from services.siem_forwarder.util.runner import DestinationRunner
from tests.siem_forwarder.events import encode, make_event
from tests.siem_forwarder.harness import Harness, destination_block
from tests.siem_forwarder.receivers.rsyslog import Rsyslog

HEC_PORT = 19830
SYSLOG_PORT = 19831
BATCH = 500


async def make_topic(settings, n: int) -> tuple[str, list[dict]]:
    base = load_topics()[EVENTS]
    topic = f"bench.forwarder.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [TopicSpec(topic, base.partitions, 1, 3_600_000, "producer", [], [], "")])
    events = [make_event(i) for i in range(n)]
    p = make_producer(settings)
    await p.start()
    try:
        futs = [await p.send(topic, encode(e), key=e["org_id"].encode()) for e in events]
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return topic, events


def count(h: Harness) -> int:
    if isinstance(h.receiver, Rsyslog):
        return h.receiver.count_lines()
    return len(h.receiver.received)


async def wait_count(h: Harness, start: int, n: int, within: float = 120) -> None:
    deadline = time.monotonic() + within
    while count(h) - start < n:  # noqa: ASYNC110 - polling the receiver's output is the measurement
        if time.monotonic() > deadline:
            raise TimeoutError(f"{h.kind}: {count(h) - start}/{n} after {within}s")
        await asyncio.sleep(0.01)


async def via_forwarder(settings, h: Harness, topic: str, n: int) -> float:
    blk = destination_block(
        h.kind, f"bench-{uuid.uuid4().hex[:6]}", h.port, getattr(h.receiver, "cert", None)
    )
    blk["batch"] = {"max_events": BATCH, "max_seconds": 0.05, "max_bytes": 4 * 1024 * 1024}
    dest = ForwarderConfig.model_validate({"topic": topic, "destinations": [blk]}).destinations[0]
    await ensure_topics(settings, dead_letter_specs(ForwarderConfig(destinations=[dest])))
    producer = make_producer(settings)
    await producer.start()
    stop = asyncio.Event()
    enc, client = dest.build()
    runner = DestinationRunner(settings, dest, topic, producer, enc, client, stop)
    start = count(h)
    task = asyncio.create_task(runner.run())
    # time from the first delivered event to the last (excludes the consumer-group join)
    while count(h) == start:  # noqa: ASYNC110
        await asyncio.sleep(0.002)
    t0 = time.perf_counter()
    await wait_count(h, start, n)
    dt = time.perf_counter() - t0
    stop.set()
    await task
    await producer.stop()
    return (n - 1) / dt if dt > 0 else float("inf")


async def bare_http(h: Harness, bodies: list[bytes], n: int, token: str) -> float:
    start = count(h)
    headers = {"Authorization": f"Splunk {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient() as http:
        t0 = time.perf_counter()
        for b in bodies:
            r = await http.post(
                f"http://127.0.0.1:{h.port}/services/collector/event", content=b, headers=headers
            )
            r.raise_for_status()
        await wait_count(h, start, n)
        return n / (time.perf_counter() - t0)


async def bare_tcp(h: Harness, chunks: list[bytes], n: int) -> float:
    start = count(h)
    _, w = await asyncio.open_connection("127.0.0.1", h.port)
    t0 = time.perf_counter()
    for c in chunks:
        w.write(c)
        await w.drain()
    await wait_count(h, start, n)
    dt = time.perf_counter() - t0
    w.close()
    return n / dt


async def main(n: int, reps: int) -> None:
    import os

    configure_logging("bench", "WARNING")
    settings = load_settings()
    tmp = Path(tempfile.mkdtemp(prefix="fwd-bench-"))
    hec = Harness("splunk_hec", tmp)
    hec.port = hec.receiver.port = HEC_PORT
    rs = Harness("syslog_tcp", tmp)
    rs.port = rs.receiver.port = SYSLOG_PORT
    rs.receiver._write_conf()
    await hec.start()
    await rs.start()
    try:
        topic, events = await make_topic(settings, n)
        docs = [e for e in events]
        hec_enc, _ = (
            ForwarderConfig.model_validate({"destinations": [destination_block("splunk_hec", "x", HEC_PORT)]})
            .destinations[0]
            .build()
        )
        sys_enc, _ = (
            ForwarderConfig.model_validate(
                {"destinations": [destination_block("syslog_tcp", "y", SYSLOG_PORT)]}
            )
            .destinations[0]
            .build()
        )
        hec_items = [hec_enc.encode(d) for d in docs]
        hec_bodies = [b"\n".join(hec_items[i : i + BATCH]) for i in range(0, n, BATCH)]
        sys_items = [sys_enc.encode(d) for d in docs]
        sys_chunks = [b"".join(sys_items[i : i + BATCH]) for i in range(0, n, BATCH)]
        token = os.environ["FWD_TEST_HEC_TOKEN"]
        results: dict[str, list[float]] = {k: [] for k in ("hec_fwd", "hec_bare", "sys_fwd", "sys_bare")}
        for r in range(reps):
            results["hec_bare"].append(await bare_http(hec, hec_bodies, n, token))
            results["hec_fwd"].append(await via_forwarder(settings, hec, topic, n))
            results["sys_bare"].append(await bare_tcp(rs, sys_chunks, n))
            results["sys_fwd"].append(await via_forwarder(settings, rs, topic, n))
            print(
                f"rep {r + 1}/{reps}: " + ", ".join(f"{k}={v[-1]:,.0f}/s" for k, v in results.items()),
                flush=True,
            )
        med = {k: statistics.median(v) for k, v in results.items()}
        size = statistics.median(len(b) for b in hec_items)
        print(f"\n{n} events per run (median HEC event {size:.0f} B), batch {BATCH}, {reps} reps, medians:")
        for label, fwd, bare, what in (
            ("Splunk HEC ", "hec_fwd", "hec_bare", "bare httpx "),
            ("rsyslog TCP", "sys_fwd", "sys_bare", "bare socket"),
        ):
            print(
                f"  {label} forwarder {med[fwd]:>9,.0f} ev/s  {what} {med[bare]:>9,.0f} ev/s  "
                f"ratio {med[fwd] / med[bare]:.2f}"
            )
    finally:
        await hec.stop()
        await rs.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    asyncio.run(main(a.events, a.reps))
