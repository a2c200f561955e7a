"""``python -m benchmarks.e2e``: the whole pipeline on this machine, with the SIEM in the loop, beside its
ceiling measured in the same run.

One private stack (Kafka + ClickHouse on ports 19950+), then:

1. **the pipeline**: ``auditpipe run`` (ingest, enricher, sink, forwarder, query API) with one Splunk HEC
   destination, a lean HEC receiver (benchmarks/e2e/receiver.py) as the SIEM. N events are posted to the
   ingest as fast as 4 concurrent clients can (batches of 500); sustained = N / time until every event is
   queryable in ClickHouse **and** has reached the SIEM. Three runs, medians.
2. **the bare chain** (the ceiling): the same topology without what auditpipe adds
   (benchmarks/e2e/bare.py): an HTTP server that produces the body, a consume → split → produce hop, a
   consume → ClickHouse insert (the same input table, so the same columns and side tables), a consume →
   HTTP post to the same receiver. Same N, same clients, three runs, medians.
3. **latency** at 50 % and 90 % of the pipeline's sustained rate, 20 s each: every event's ``occurred_at``
   is its send time; ingest-to-queryable = ClickHouse's ``inserted_at - occurred_at``, ingest-to-SIEM =
   arrival at the receiver - ``occurred_at``; p50 / p99.

For every process: CPU-µs per event over the sustained runs (from /proc: the processes' CPU time, which a
busy box does not stretch) and peak RSS. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from benchmarks.measure import median, peak_rss_mb, proc_cpu_s, ratio
from schemas.topics import TopicSpec
from services.common.clickhouse import make_client
from services.common.kafka import ensure_topics
from services.common.migrations import migrate
from services.common.stack.manager import Stack
from services.supervisor.local import LocalPipeline, Ports

PORTS = Ports.offset(19950)
RECEIVER_PORT = 19965
BARE_HTTP_PORT = 19966
BATCH = 500
HEC_TOKEN = "bench-hec-token"
BARE_DB = "bench_bare"


def event(i: int, phase: str, now: str | None = None) -> dict:
    """~1 KB: a console deployment with payload, forwarded-for chain and a secret under a sensitive key."""
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": now or datetime.now(UTC).isoformat(),
        "org_id": f"{phase}-{i % 12}",
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


async def post_until_accepted(h: httpx.AsyncClient, url: str, body: bytes, headers: dict) -> int:
    """POST until the ingest answers 202, as the client does: a 503 or 429 (admission control) is
    retried after its Retry-After (else 0.2 s). Returns how many times it was refused."""
    refused = 0
    while True:
        r = await h.post(url, content=body, headers=headers)
        if r.status_code == 202:
            return refused
        if r.status_code not in (429, 503):
            raise RuntimeError(f"ingest answered {r.status_code}: {r.text[:200]}")
        refused += 1
        try:
            wait = float(r.headers.get("retry-after", "0.2"))
        except ValueError:
            wait = 0.2
        await asyncio.sleep(min(max(wait, 0.05), 5.0))


async def post_all(url: str, token: str, batches: list[bytes], concurrency: int = 4) -> int:
    """Every batch accepted (202), by ``concurrency`` clients; returns the number of refusals."""
    q: asyncio.Queue[bytes] = asyncio.Queue()
    for b in batches:
        q.put_nowait(b)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    refused = 0

    async def worker() -> None:
        nonlocal refused
        async with httpx.AsyncClient(timeout=60) as h:
            while not q.empty():
                refused += await post_until_accepted(h, url, q.get_nowait(), headers)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return refused


async def paced(url: str, token: str, rate: float, seconds: float, phase: str) -> tuple[int, int]:
    """Send at ``rate`` events/s for ``seconds``, in batches sized for ~10 requests/s, each retried until
    accepted (a retried event keeps its first send time, so its latency counts the wait). Returns the
    events sent and the refusals met."""
    per = max(1, min(BATCH, int(rate / 10)))
    sent = 0
    t0 = time.perf_counter()
    pending: set[asyncio.Task] = set()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=60) as h:
        tasks: list[asyncio.Task] = []
        while time.perf_counter() - t0 < seconds:
            body = orjson.dumps([event(sent + j, phase) for j in range(per)])
            t = asyncio.create_task(post_until_accepted(h, url, body, headers))
            tasks.append(t)
            pending.add(t)
            pending = {t for t in pending if not t.done()}
            sent += per
            await asyncio.sleep(max(0, t0 + sent / rate - time.perf_counter()))
        refused = sum(await asyncio.gather(*tasks))
    return sent, refused


def receiver_stats() -> dict:
    return httpx.get(f"http://127.0.0.1:{RECEIVER_PORT}/stats", timeout=10).json()


def stored(ch, database: str, phase: str) -> int:  # noqa: ANN001
    return int(
        ch.query(
            f"SELECT count() FROM {database}.events WHERE startsWith(org_id, {{p:String}})",
            parameters={"p": phase + "-"},
        ).result_rows[0][0]
    )


def wait_until(pred, timeout_s: float) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out waiting for the events to arrive")
        time.sleep(0.1)


def sustained_run(url: str, token: str, n: int, phase: str, ch, database: str, pids: dict[str, int]) -> dict:  # noqa: ANN001
    """Post n events, wait until all are stored and forwarded; events/s and CPU-µs per event per process."""
    now = datetime.now(UTC).isoformat()
    batches = [orjson.dumps([event(i + j, phase, now) for j in range(BATCH)]) for i in range(0, n, BATCH)]
    cpu0 = {k: proc_cpu_s(p) for k, p in pids.items()}
    t0 = time.perf_counter()
    refused = asyncio.run(post_all(url, token, batches))
    t_ingested = time.perf_counter() - t0
    wait_until(lambda: stored(ch, database, phase) >= n, 600)
    t_stored = time.perf_counter() - t0
    wait_until(lambda: receiver_stats().get(phase, {}).get("count", 0) >= n, 600)
    t_all = time.perf_counter() - t0
    cpu = {k: (proc_cpu_s(p) - cpu0[k]) * 1e6 / n for k, p in pids.items()}
    return {
        "events_s": n / t_all,
        "stored_s": n / t_stored,
        "accepted_s": n / t_ingested,
        "refused": refused,
        **{f"cpu:{k}": v for k, v in cpu.items()},
    }


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *args], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=int(os.environ.get("BENCH_E2E_EVENTS", "100000")))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--latency-seconds", type=float, default=20.0)
    args = ap.parse_args()
    n = args.events
    # SIGTERM (timeout, kill) runs the cleanup below too: no stack or service left on the private ports
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    with tempfile.TemporaryDirectory(prefix="auditpipe-bench-e2e-") as tmp:
        forwarder = (
            "[[destinations]]\n"
            'name = "bench-siem"\n'
            'type = "splunk_hec"\n'
            f'url = "http://127.0.0.1:{RECEIVER_PORT}"\n'
            'token_env = "BENCH_HEC_TOKEN"\n'
        )
        pipe = LocalPipeline(
            state_dir=Path(tmp),
            ports=PORTS,
            services=("ingest", "enricher", "sink", "forwarder", "api"),
            forwarder_config=forwarder,
            extra_env={"AUDITPIPE_LOG_LEVEL": "WARNING", "BENCH_HEC_TOKEN": HEC_TOKEN},
        )
        s = pipe.settings()
        env = dict(os.environ, **pipe.env())
        procs: list[subprocess.Popen] = []
        figures: dict[str, list[dict]] = {"pipeline": [], "bare": []}
        lat: dict[int, dict] = {}
        rss: dict[str, float] = {}
        try:
            pipe.up()
            ch = make_client(s)
            migrate(ch, BARE_DB)
            receiver = start(["benchmarks.e2e.receiver", str(RECEIVER_PORT)], env, Path(tmp) / "receiver.log")
            procs.append(receiver)
            # ---------------------------------------------------------------- the bare chain
            a, b = f"bench.bare.in.{uuid.uuid4().hex[:6]}", f"bench.bare.out.{uuid.uuid4().hex[:6]}"
            asyncio.run(
                ensure_topics(
                    s,
                    [
                        TopicSpec(t, 6, 1, 3_600_000, "producer", [], [], "", max_message_bytes=8 << 20)
                        for t in (a, b)
                    ],
                )
            )
            bare = {
                "http": start(
                    ["benchmarks.e2e.bare", "http", str(BARE_HTTP_PORT), a], env, Path(tmp) / "bare.log"
                ),
                "hop": start(["benchmarks.e2e.bare", "hop", a, b], env, Path(tmp) / "bare.log"),
                "sink": start(["benchmarks.e2e.bare", "sink", b, BARE_DB], env, Path(tmp) / "bare.log"),
                "forward": start(
                    [
                        "benchmarks.e2e.bare",
                        "forward",
                        b,
                        f"http://127.0.0.1:{RECEIVER_PORT}/services/collector/event",
                    ],
                    env,
                    Path(tmp) / "bare.log",
                ),
            }
            procs += list(bare.values())
            time.sleep(5)  # consumers join their groups
            bare_url = f"http://127.0.0.1:{BARE_HTTP_PORT}/v1/events/batch"
            bare_pids = {f"bare {k}": p.pid for k, p in bare.items()}
            stack = Stack(s)
            bare_pids |= {"clickhouse": stack.ch_status().pid or 0, "kafka": stack.kafka_status().pid or 0}
            bare_pids = {k: v for k, v in bare_pids.items() if v}
            asyncio.run(post_all(bare_url, "-", [orjson.dumps([event(i, "warm") for i in range(500)])]))
            wait_until(lambda: receiver_stats().get("warm", {}).get("count", 0) >= 500, 120)
            for r in range(args.runs):
                figures["bare"].append(sustained_run(bare_url, "-", n, "bare", ch, BARE_DB, bare_pids))
                print(f"bare chain run {r + 1}: {figures['bare'][-1]['events_s']:,.0f} events/s", flush=True)
                httpx.post(f"http://127.0.0.1:{RECEIVER_PORT}/reset")
                ch.command(f"TRUNCATE TABLE {BARE_DB}.events")
            for k, p in bare.items():
                rss[f"bare {k}"] = peak_rss_mb(p.pid)
                p.terminate()
            # ---------------------------------------------------------------- the pipeline
            pipe.start(wait_s=240)
            url = f"http://127.0.0.1:{PORTS.ingest}/v1/events/batch"
            asyncio.run(
                post_all(url, pipe.ingest_token, [orjson.dumps([event(i, "warm") for i in range(100)])])
            )
            wait_until(lambda: stored(ch, s.clickhouse_database, "warm") >= 100, 180)
            wait_until(lambda: receiver_stats().get("warm", {}).get("count", 0) >= 100, 180)
            pids = {k: v for k, v in pipe.child_pids().items() if v}
            pids["clickhouse"] = Stack(s).ch_status().pid or 0
            pids["kafka"] = Stack(s).kafka_status().pid or 0
            pids = {k: v for k, v in pids.items() if v}
            for r in range(args.runs):
                phase = f"sust{r}"
                figures["pipeline"].append(
                    sustained_run(url, pipe.ingest_token, n, phase, ch, s.clickhouse_database, pids)
                )
                print(
                    f"pipeline run {r + 1}: {figures['pipeline'][-1]['events_s']:,.0f} events/s", flush=True
                )
            sustained = median(x["events_s"] for x in figures["pipeline"])
            for pct in (50, 90):
                phase = f"lat{pct}"
                sent, refused = asyncio.run(
                    paced(url, pipe.ingest_token, sustained * pct / 100, args.latency_seconds, phase)
                )
                wait_until(lambda: stored(ch, s.clickhouse_database, phase) >= sent, 600)  # noqa: B023
                wait_until(lambda: receiver_stats().get(phase, {}).get("count", 0) >= sent, 600)  # noqa: B023
                q = ch.query(
                    "SELECT quantiles(0.5, 0.99)(dateDiff('millisecond', occurred_at, inserted_at)) "
                    f"FROM {s.clickhouse_database}.events WHERE startsWith(org_id, {{p:String}})",  # noqa: S608
                    parameters={"p": phase + "-"},
                ).result_rows[0][0]
                siem = receiver_stats()[phase]
                lat[pct] = {
                    "n": sent,
                    "refused": refused,
                    "q50": q[0] / 1000,
                    "q99": q[1] / 1000,
                    "s50": siem["p50"],
                    "s99": siem["p99"],
                }
            for k, p in pids.items():
                rss[k] = peak_rss_mb(p)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            pipe.down()

    med = {k: {m: median(x[m] for x in v) for m in v[0]} for k, v in figures.items()}
    ceiling = med["bare"]["events_s"]
    print(f"\n## End to end with the SIEM in the loop ({n:,} events of ~1 KB, medians of {args.runs} runs)\n")
    print("| figure | pipeline | bare chain (ceiling) | ratio |")
    print("|---|---|---|---|")
    for key, label in (
        ("events_s", "sustained, stored AND forwarded (events/s)"),
        ("stored_s", "stored in ClickHouse (events/s)"),
        ("accepted_s", "accepted (202) by the HTTP front (events/s)"),
    ):
        p, c = med["pipeline"][key], med["bare"][key]
        print(f"| {label} | {p:,.0f} | {c:,.0f} | {ratio(p, c):.2f} |")
    print(f"| requests refused (503/429) and retried, per run | {med['pipeline']['refused']:,.0f} | | |")
    print("\n| process | CPU-µs per event, pipeline | CPU-µs per event, bare chain | peak RSS MB |")
    print("|---|---|---|---|")
    names = sorted({k[4:] for k in (*med["pipeline"], *med["bare"]) if k.startswith("cpu:")})
    for name in names:
        p, b = med["pipeline"].get(f"cpu:{name}"), med["bare"].get(f"cpu:{name}")
        print(
            f"| {name} | {'' if p is None else f'{p:.1f}'} | {'' if b is None else f'{b:.1f}'} | "
            f"{rss.get(name, 0) or '':} |"
        )
    total = sum(v for k, v in med["pipeline"].items() if k.startswith("cpu:"))
    bare_total = sum(v for k, v in med["bare"].items() if k.startswith("cpu:"))
    print(f"| all processes (incl. Kafka, ClickHouse) | {total:.1f} | {bare_total:.1f} | |")
    heads = ["latency", "events (requests refused, retried)", "ingest-to-queryable p50 / p99"]
    print("\n| " + " | ".join([*heads, "ingest-to-SIEM p50 / p99"]) + " |")
    print("|---|---|---|---|")
    for pct, v in lat.items():
        print(
            f"| at {pct} % of sustained ({sustained * pct / 100:,.0f} events/s) "
            f"| {v['n']:,} ({v['refused']}) | "
            f"{v['q50']:.2f} s / {v['q99']:.2f} s | {v['s50']:.2f} s / {v['s99']:.2f} s |"
        )
    met = sustained >= 5000 and lat[50]["q99"] < 2 and ratio(sustained, ceiling) >= 0.5
    print(
        f"\ntarget: >= 5,000 events/s stored and forwarded, p99 ingest-to-queryable < 2 s at 50 %, >= 0.5 of "
        f"the bare chain: {'met' if met else 'not met'} ({sustained:,.0f} events/s, "
        f"p99 {lat[50]['q99']:.2f} s, ratio {ratio(sustained, ceiling):.2f})"
    )
    print(f"(median per-run figures: {statistics.median(x['events_s'] for x in figures['pipeline']):,.0f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
