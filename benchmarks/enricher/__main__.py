"""Enricher throughput and cost on this machine, beside the ceilings measured in the same run.

``python -m benchmarks.enricher [--events N] [--envelope K] [--runs R] [--no-adversarial]``

Each run writes the same N events of ~1 KB (the contract examples' shape: payload, snapshot, changes, a
secret under a sensitive key) to two fresh raw topics — one record per event, and envelopes of K events
(as the ingest and the client write them) — and measures, on the shared broker:

- ``rules``: the enricher's rules alone, in this process, on one core (CPU time);
- ``aiokafka batch``: bare aiokafka doing what the worker does minus rules and faust: getmany, decode
  every event, encode it again, one record batch per partition (create_batch / send_batch), wait for the
  acks, commit. On single-event records once per compression codec (lz4 at aiokafka's level 9, zstd,
  snappy, none): the one with the enricher's codec is **the ceiling** of the ratio (the pass-through the
  issue measured: what moving these events costs when each is a record); on envelopes as well (what
  moving them costs when producers batch them: the floor of any Kafka-to-Kafka hop);
- ``faust pass-through``: the worker's own faust shell and bulk delivery with a pass-through instead of
  the rules (benchmarks/enricher/passthrough.py), on single records and on envelopes: what faust's
  per-record cost does with and without envelopes;
- ``enricher``: ``python -m services.enricher``, one then two processes in one group, on envelopes; and
  one process on single-event records (producers that do not batch).

Every loop is measured sustained: from the moment the first 10 % of the events are through (outputs on
the topic for worker processes, events handled for the in-process aiokafka loop) to the last one, so the
start of a run — connections, the first fetch, the producer's metadata, the worker's catch-up on the
org-switch topic — weighs on neither side; CPU-µs per event is the CPU time of the loop's processes over
that span (from /proc for workers). The table also gives each loop's rate over the whole run (workers:
from the moment every process has partitions assigned; the aiokafka loop: from its first non-empty
fetch), which on 100,000 events is up to a fifth lower for workers. Medians of R runs. Then
the adversarial corpus: the slowest single record the rules can be handed (up to the event size limit),
in CPU-ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from benchmarks.measure import median, proc_cpu_s, ratio, self_cpu_s
from schemas.events_v1 import MAX_EVENT_BYTES
from services.common.runtime import tune_gc_for_throughput
from services.common.settings import EnricherSettings, load_settings
from services.enricher.rules.enrich import Enricher, Results

ROOT = Path(__file__).resolve().parents[2]
BOOT = load_settings().kafka_bootstrap
PORTS = iter(range(19550, 19599))
PARTITIONS = 6
CODECS = ["lz4", "zstd", "snappy", None]
ENRICHER_CODEC = EnricherSettings().compression
WARMUP = 0.1  # the share of a run's events before the sustained rate is measured


def sustained(
    n: int, t0: float, cpu0: float, mark: tuple[float, float, int] | None, t: float, cpu: float
) -> dict[str, float]:
    """Figures of a loop that handled ``n`` events from (``t0``, ``cpu0``) to (``t``, ``cpu``), sustained
    from ``mark`` (time, CPU, events then) on; over the whole run when it never reached the mark."""
    mt, mcpu, done = mark if mark is not None else (t0, cpu0, 0)
    return {
        "events_s": (n - done) / (t - mt),
        "cpu_us": (cpu - mcpu) * 1e6 / (n - done),
        "run_events_s": n / (t - t0),
    }


def raw_event(i: int) -> dict[str, Any]:
    """~1 KB, like the contract examples: a console deployment with payload, snapshot, changes."""
    return {
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


def records(n: int, per: int) -> list[tuple[bytes, bytes]]:
    evs = [raw_event(i) for i in range(n)]
    if per <= 1:
        return [(e["event_id"].encode(), orjson.dumps(e)) for e in evs]
    return [(evs[i]["event_id"].encode(), orjson.dumps(evs[i : i + per])) for i in range(0, n, per)]


async def create_topics(*names: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOT)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, PARTITIONS, 1, topic_configs={"max.message.bytes": "8388608"}) for n in names]
        )
    finally:
        await admin.close()


async def produce(topic: str, recs: list[tuple[bytes, bytes]]) -> None:
    p = AIOKafkaProducer(
        bootstrap_servers=BOOT, acks="all", linger_ms=10, max_batch_size=1024 * 1024, max_request_size=8 << 20
    )
    await p.start()
    try:
        futs = [await p.send(topic, key=k, value=v) for k, v in recs]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def end_total(topic: str, consumer: AIOKafkaConsumer) -> int:
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    return sum((await consumer.end_offsets(tps)).values())


# ------------------------------------------------------------------------------------------- rules
def rules_only(recs: list[tuple[bytes, bytes]], n: int) -> dict[str, float]:
    """The rules on one core, as the worker runs them (batches of 200 records, GC tuned)."""
    e = Enricher.from_settings(EnricherSettings(trusted_proxies=["10.0.0.0/8"]))
    tune_gc_for_throughput()
    c0, t0 = self_cpu_s(), time.perf_counter()
    for j in range(0, len(recs), 200):
        out = Results()
        for i, (_, v) in enumerate(recs[j : j + 200]):
            e.process_record(v, out, topic="t", partition=0, offset=j + i, timestamp_ms=1_764_000_000_000)
    cpu, wall = self_cpu_s() - c0, time.perf_counter() - t0
    return {"events_s": n / cpu, "cpu_us": cpu * 1e6 / n, "wall_events_s": n / wall}


# ------------------------------------------------------------------------------- aiokafka ceiling
async def aiokafka_batch(raw: str, n: int, codec: str | None) -> dict[str, float]:
    """getmany -> decode/encode every event -> one record batch per partition -> acks -> commit."""
    out = f"{raw}.pt.{codec or 'none'}.{uuid.uuid4().hex[:6]}"
    await create_topics(out)
    consumer = AIOKafkaConsumer(
        raw,
        bootstrap_servers=BOOT,
        group_id=f"bench-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=BOOT,
        acks="all",
        enable_idempotence=True,
        linger_ms=0,
        compression_type=codec,
        max_batch_size=1024 * 1024,
        max_request_size=8 << 20,
    )
    await consumer.start()
    await producer.start()
    done = 0
    t0 = c0 = None
    mark = None
    try:
        while done < n:
            batch = await consumer.getmany(timeout_ms=500)  # whatever was fetched: no cap
            if not batch:
                continue
            if t0 is None:
                t0, c0 = time.perf_counter(), self_cpu_s()
            groups: dict[int, list[tuple[bytes, bytes]]] = {}
            for msgs in batch.values():
                for m in msgs:
                    data = orjson.loads(m.value)
                    for ev in data if isinstance(data, list) else [data]:
                        key = ev["event_id"].encode()
                        groups.setdefault(zlib.crc32(key) % PARTITIONS, []).append((key, orjson.dumps(ev)))
                        done += 1
            futs = []
            for part, items in groups.items():
                b = producer.create_batch()
                for k, v in items:
                    if b.append(key=k, value=v, timestamp=None, headers=[]) is None:
                        futs.append(await producer.send_batch(b, out, partition=part))
                        b = producer.create_batch()
                        b.append(key=k, value=v, timestamp=None, headers=[])
                b.close()
                futs.append(await producer.send_batch(b, out, partition=part))
            await asyncio.gather(*futs)
            await consumer.commit()
            if mark is None and done >= WARMUP * n:
                mark = (time.perf_counter(), self_cpu_s(), done)
        return sustained(n, t0 or 0.0, c0 or 0.0, mark, time.perf_counter(), self_cpu_s())
    finally:
        await consumer.stop()
        await producer.stop()


# ------------------------------------------------------------------------------ worker processes
def worker_env(raw: str, out: str, dl: str, group: str, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "AUDITPIPE_LOG_LEVEL": "WARNING",
        "AUDITPIPE_ENRICHER__RAW_TOPIC": raw,
        "AUDITPIPE_ENRICHER__EVENTS_TOPIC": out,
        "AUDITPIPE_ENRICHER__DEADLETTER_TOPIC": dl,
        "AUDITPIPE_ENRICHER__STATE_TOPIC": f"bench.enricher.state.{group}",
        "AUDITPIPE_ENRICHER__SWITCH_TOPIC": f"bench.enricher.switch.{group}",
        "AUDITPIPE_ENRICHER__CONSUMER_GROUP": group,
        "AUDITPIPE_ENRICHER__WEB_PORT": str(port),
        "AUDITPIPE_ENRICHER__DATA_DIR": f"{tempfile.gettempdir()}/bench-{group}",
        "AUDITPIPE_ENRICHER__TRUSTED_PROXIES": '["10.0.0.0/8"]',
        "AUDITPIPE_ENRICHER__SESSION_TIMEOUT_S": "6",
    }


async def worker_run(raw: str, n: int, workers: int, module: str) -> dict[str, float]:
    """Start ``workers`` processes of ``module`` on the pre-filled ``raw``; events/s and CPU-µs from the
    moment every process has partitions assigned (its start-up excluded) to the last output."""
    tag = uuid.uuid4().hex[:8]
    out, dl, group = f"bench.enricher.out.{tag}", f"bench.enricher.dl.{tag}", f"bench-enricher-{tag}"
    await create_topics(out, dl)
    ports = [next(PORTS) for _ in range(workers)]
    procs = [
        subprocess.Popen(  # noqa: ASYNC220 - Popen returns at once
            [sys.executable, "-m", module],
            cwd=ROOT,
            env=worker_env(raw, out, dl, group, port),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in ports
    ]
    probe = AIOKafkaConsumer(bootstrap_servers=BOOT, group_id=None)
    await probe.start()
    try:
        deadline = time.monotonic() + 120
        async with httpx.AsyncClient() as http:
            while time.monotonic() < deadline:
                try:
                    states = [
                        (await http.get(f"http://127.0.0.1:{p}/readyz", timeout=1)).json() for p in ports
                    ]
                    if all(st.get("assigned_partitions", 0) > 0 for st in states):
                        break
                except (httpx.HTTPError, ValueError):
                    pass
                await asyncio.sleep(0.02)
        t0, cpu0 = time.perf_counter(), sum(proc_cpu_s(p.pid) for p in procs)
        before = await end_total(out, probe)
        total = 0
        mark = None
        while time.monotonic() < deadline + 300:
            total = await end_total(out, probe)
            if total >= n:
                break
            if mark is None and total >= WARMUP * n:
                mark = (time.perf_counter(), sum(proc_cpu_s(p.pid) for p in procs), total)
            await asyncio.sleep(0.02)
        else:
            raise RuntimeError(f"{module} x{workers} did not finish: {total} of {n}")
        t = time.perf_counter()
        cpu = sum(proc_cpu_s(p.pid) for p in procs)
        if before > n * 0.05:
            print(f"  note: {before} of {n} outputs existed before all {workers} had partitions", flush=True)
        return sustained(n, t0, cpu0, mark, t, cpu)
    finally:
        await probe.stop()
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


# ------------------------------------------------------------------------------ adversarial corpus
def adversarial_corpus(limit: int = MAX_EVENT_BYTES) -> dict[str, bytes]:
    """Records built to make a backtracking regex or a naive walk slow, each up to ``limit`` bytes (the
    contract's event size; the ingest's default is half of it)."""

    def ev(**kw: Any) -> bytes:
        base = {"occurred_at": "2026-11-22T10:00:00Z", "org_id": "o", "action": "x:update"}
        return orjson.dumps({**base, **kw})

    s = limit - 200
    return {
        "jwt prefix repeated (eyJ-)": ev(
            change="eyJ-" * (s // 4 // 2), request={"payload": {"t": "eyJ-" * (s // 8)}}
        ),
        "key=value words (-password)": ev(action="bad action", change="-password" * (s // 9)),
        "token words in a user agent": ev(
            request={"user_agent": ("token " + "a" * 12 + " ") * 100}, change="token " * (s // 12)
        ),
        "bearer without a value": ev(change="Bearer " * (s // 7)),
        "aws-like prefixes": ev(change="AKIA" * (s // 4)),
        "pem header repeated": ev(change="-----BEGIN PRIVATE KEY-----" * (s // 27)),
        "many sensitive keys": ev(request={"payload": {f"password{i}": i for i in range(s // 24)}}),
        "deep nesting": ev(snapshot=_deep(30)),
        "wide forwarded-for": ev(
            request={"peer_ip": "10.0.0.1", "x_forwarded_for": ", ".join(["10.0.0.2"] * 1600)}
        ),
        "webhook-like path": ev(request={"path": "/hooks" * 1300}),
        "escaped unicode text": ev(change="\u00e9" * (s // 4)),
        "invalid event with secrets": ev(action="no colon here", change=("password=hunter2 " * (s // 17))),
        "scrub text of non-JSON": b"password=x&token=y " * (s // 19),
        "many valid secrets in a string": ev(change="AKIAIOSFODNN7EXAMPLE " * (s // 21)),
        "many bearer credentials": ev(change="Bearer abcdefghijklmnop " * (s // 24)),
        "many tiny objects": ev(request={"payload": [{"a": 1}] * (s // 10)}),
        "many tiny strings": ev(snapshot={"l": ["x" * 13] * (s // 16)}),
        "many floats": ev(snapshot={"f": [0.5e-7] * (s // 7)}),
    }


def _deep(d: int) -> Any:
    v: Any = {"k": "eyJ-" * 10}
    for _ in range(d):
        v = {"k": [v]}
    return v


def adversarial_worst() -> tuple[str, float, int]:
    e = Enricher.from_settings(EnricherSettings(trusted_proxies=["10.0.0.0/8"]))
    worst = ("", 0.0, 0)
    for name, value in adversarial_corpus().items():
        best = float("inf")
        for _ in range(3):  # CPU time of this (single-threaded) call: what a noisy box cannot stretch
            c0 = time.process_time()
            e.process_record(value, Results(), topic="t", partition=0, offset=0, timestamp_ms=1)
            best = min(best, time.process_time() - c0)
        if best > worst[1]:
            worst = (name, best, len(value))
        print(f"  adversarial  {name:<32} {len(value):>8,} B  {best * 1000:7.1f} CPU-ms", flush=True)
    return worst


# ------------------------------------------------------------------------------------------ main
async def main_async(n: int, per: int, runs: int, adversarial: bool) -> int:
    codecs = [f"aiokafka batch, single, {c or 'none'}" for c in CODECS]
    stages = [
        "rules",
        *codecs,
        "aiokafka batch, envelopes",
        "faust pass-through, single",
        "faust pass-through, envelopes",
        "enricher x1, single",
        "enricher x1, envelopes",
        "enricher x2, envelopes",
    ]
    figures: dict[str, list[dict[str, float]]] = {k: [] for k in stages}
    single, enveloped = records(n, 1), None
    events = [orjson.loads(v) for _, v in single]
    enveloped = [
        (events[i]["event_id"].encode(), orjson.dumps(events[i : i + per])) for i in range(0, n, per)
    ]
    size = len(single[0][1])
    for r in range(runs):
        raw_1, raw_k = (f"bench.enricher.raw.{uuid.uuid4().hex[:8]}" for _ in range(2))
        await create_topics(raw_1, raw_k)
        await produce(raw_1, single)
        await produce(raw_k, enveloped)
        figures["rules"].append(rules_only(enveloped, n))
        for c in CODECS:
            figures[f"aiokafka batch, single, {c or 'none'}"].append(await aiokafka_batch(raw_1, n, c))
        figures["aiokafka batch, envelopes"].append(await aiokafka_batch(raw_k, n, ENRICHER_CODEC))
        pt = "benchmarks.enricher.passthrough"
        figures["faust pass-through, single"].append(await worker_run(raw_1, n, 1, pt))
        figures["faust pass-through, envelopes"].append(await worker_run(raw_k, n, 1, pt))
        figures["enricher x1, single"].append(await worker_run(raw_1, n, 1, "services.enricher"))
        figures["enricher x1, envelopes"].append(await worker_run(raw_k, n, 1, "services.enricher"))
        figures["enricher x2, envelopes"].append(await worker_run(raw_k, n, 2, "services.enricher"))
        print(
            f"run {r + 1}/{runs}: "
            + ", ".join(
                f"{k}={v[-1]['events_s']:,.0f}/s {v[-1]['cpu_us']:.1f}µs" for k, v in figures.items()
            ),
            flush=True,
        )
    med = {
        k: {m: median(x.get(m, x["events_s"]) for x in v) for m in ("events_s", "cpu_us", "run_events_s")}
        for k, v in figures.items()
    }
    ceiling = med[f"aiokafka batch, single, {ENRICHER_CODEC}"]
    print(
        f"\nenricher benchmark: {n:,} events of ~{size} B, single-event records and envelopes of {per}, "
        f"{PARTITIONS} partitions, {os.cpu_count()} cores, medians of {runs} runs; ceiling = aiokafka "
        f"batch pass-through of single-event records with {ENRICHER_CODEC} (the enricher's codec)\n"
    )
    print(
        "| stage | events/s, sustained | CPU-µs per event (all its processes) | ratio to ceiling "
        "(events/s) | events/s over the whole run | ratio, whole runs |"
    )
    print("|---|---|---|---|---|---|")
    for k, v in med.items():
        note = " (one core, CPU time)" if k == "rules" else ""
        r = ratio(v["events_s"], ceiling["events_s"])
        whole = "" if k == "rules" else f"{v['run_events_s']:,.0f}"
        rw = "" if k == "rules" else f"{ratio(v['run_events_s'], ceiling['run_events_s']):.2f}"
        print(f"| {k}{note} | {v['events_s']:,.0f} | {v['cpu_us']:.1f} | {r:.2f} | {whole} | {rw} |")
    x1 = med["enricher x1, envelopes"]
    print(
        f"\nenricher x1 (envelopes) / aiokafka batch pass-through (single records, {ENRICHER_CODEC}): "
        f"{ratio(x1['events_s'], ceiling['events_s']):.2f} sustained (target >= 0.4), "
        f"{ratio(x1['run_events_s'], ceiling['run_events_s']):.2f} over whole runs; "
        "vs the envelope pass-through: "
        f"{ratio(x1['events_s'], med['aiokafka batch, envelopes']['events_s']):.2f}; rules alone: "
        f"{med['rules']['events_s']:,.0f} events/s on one core (target >= 25,000)"
    )
    if adversarial:
        print("\nadversarial corpus (one record each, up to the contract's event size, best of 3):")
        name, worst, nbytes = adversarial_worst()
        print(f"worst: {name} ({nbytes:,} B) in {worst * 1000:.1f} CPU-ms (target < 50 ms)")
    return 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--envelope", type=int, default=200, help="events per raw record (1 = single events)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--no-adversarial", action="store_true")
    a = ap.parse_args()
    sys.exit(asyncio.run(main_async(a.events, a.envelope, a.runs, not a.no_adversarial)))


if __name__ == "__main__":
    main()
