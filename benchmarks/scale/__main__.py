"""``python -m benchmarks.scale``: does throughput grow with instances, on one broker and on three?

For each Kafka topology — one broker, then a 3-node KRaft cluster (``stack up --kafka-nodes 3``: topics
with replication factor 3 and ``min.insync.replicas`` 2, so every acknowledgement waits for a second
broker) — on private ports 20540+:

1. **ceiling**: the bare chain of ``benchmarks.e2e`` (HTTP → Kafka → hop → Kafka → ClickHouse and the
   HEC receiver; same processes, same producer settings, topics replicated like the pipeline's), N events
   of 12 orgs, three runs;
2. **the pipeline** under ``auditpipe run --instances`` with 1, then 2 processes of each stage (ingest,
   enricher, sink, forwarder; the ingest's instances share the client's requests round-robin), each on
   two workloads: events of 12 orgs, and **one big org** (every event of the run from a single org: the
   case a per-org key would pin to one partition). Three runs each; the figure is N / time until every
   event is in ClickHouse AND at the SIEM receiver.

Printed: events/s (medians of 3) with the ratio to the same topology's bare chain, then CPU-µs per event
of every process (``benchmarks.measure``: /proc CPU time, which a busy box does not stretch), and a
projection of what each stage needs per 100k events/s, from those CPU-µs. The box has 2 cores shared by
Kafka, ClickHouse and every process: a second instance of a CPU-bound stage cannot be faster here, it can
only show that the work divides (CPU-µs per event stays flat) and what more cores would buy.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

from benchmarks.e2e.__main__ import event, wait_until
from benchmarks.measure import median, peak_rss_mb, proc_cpu_s, ratio
from schemas.topics import TopicSpec
from services.common.clickhouse import make_client
from services.common.kafka import ensure_topics
from services.common.migrations import migrate
from services.supervisor.local import LocalPipeline, Ports

PORTS = Ports.cluster(20540)  # kafka 20540/42/44 (+1 controllers), ClickHouse 20546, services 20550+
STRIDE = 20  # second instances on 20570+
BARE_HTTP_PORT = 20557
BATCH = 500
HEC_TOKEN = "bench-hec-token"
BARE_DB = "bench_bare"
STAGES = ("ingest", "enricher", "sink", "forwarder")


def batches(n: int, phase: str, big_org: bool) -> list[bytes]:
    now = datetime.now(UTC).isoformat()
    out = []
    for i in range(0, n, BATCH):
        evs = [event(i + j, phase, now) for j in range(BATCH)]
        if big_org:
            for e in evs:
                e["org_id"] = f"{phase}-0"
        out.append(orjson.dumps(evs))
    return out


async def post_spread(urls: list[str], token: str, bodies: list[bytes], concurrency: int = 4) -> None:
    """``concurrency`` clients; client k posts to ``urls[k % len(urls)]`` (round-robin over instances)."""
    q: asyncio.Queue[bytes] = asyncio.Queue()
    for b in bodies:
        q.put_nowait(b)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def worker(url: str) -> None:
        async with httpx.AsyncClient(timeout=60) as h:
            while not q.empty():
                body = q.get_nowait()
                while True:
                    r = await h.post(url, content=body, headers=headers)
                    if r.status_code == 202:
                        break
                    await asyncio.sleep(0.2)

    await asyncio.gather(*(worker(urls[k % len(urls)]) for k in range(concurrency)))


class Run:
    def __init__(self, ch, database: str, receiver_port: int) -> None:  # noqa: ANN001
        self.ch, self.database, self.receiver_port = ch, database, receiver_port

    def stored(self, phase: str) -> int:
        return int(
            self.ch.query(
                f"SELECT count() FROM {self.database}.events WHERE startsWith(org_id, {{p:String}})",  # noqa: S608
                parameters={"p": phase + "-"},
            ).result_rows[0][0]
        )

    def forwarded(self, phase: str) -> int:
        stats = httpx.get(f"http://127.0.0.1:{self.receiver_port}/stats", timeout=10).json()
        return int(stats.get(phase, {}).get("count", 0))

    def sustained(
        self, urls: list[str], token: str, n: int, phase: str, big: bool, pids: dict[str, int]
    ) -> dict:
        bodies = batches(n, phase, big)
        cpu0 = {k: proc_cpu_s(p) for k, p in pids.items()}
        t0 = time.perf_counter()
        asyncio.run(post_spread(urls, token, bodies))
        wait_until(lambda: self.stored(phase) >= n, 900)
        t_stored = time.perf_counter() - t0
        wait_until(lambda: self.forwarded(phase) >= n, 900)
        t_all = time.perf_counter() - t0
        cpu = {k: (proc_cpu_s(p) - cpu0[k]) * 1e6 / n for k, p in pids.items()}
        return {"events_s": n / t_all, "stored_s": n / t_stored, **{f"cpu:{k}": v for k, v in cpu.items()}}


def start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", *args], env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT
    )


def infra_pids(pipe: LocalPipeline) -> dict[str, int]:
    stack = pipe.stack()
    out = {"clickhouse": stack.ch_status().pid or 0}
    for node in stack.nodes:
        out[f"kafka-{node.node_id}" if stack.n_nodes > 1 else "kafka"] = stack.node_pid(node.node_id) or 0
    return {k: v for k, v in out.items() if v}


def topology(nodes: int, n: int, runs: int, tmp: Path, figures: dict, rss: dict) -> None:
    forwarder = (
        "[[destinations]]\n"
        'name = "bench-siem"\n'
        'type = "splunk_hec"\n'
        f'url = "http://127.0.0.1:{PORTS.siem}"\n'
        'token_env = "BENCH_HEC_TOKEN"\n'
    )
    pipe = LocalPipeline(
        state_dir=tmp / f"kafka{nodes}",
        ports=PORTS,
        services=("ingest", "enricher", "sink", "forwarder", "api"),
        forwarder_config=forwarder,
        kafka_heap="512m",
        kafka_nodes=nodes,
        port_stride=STRIDE,
        extra_env={"AUDITPIPE_LOG_LEVEL": "WARNING", "BENCH_HEC_TOKEN": HEC_TOKEN},
    )
    s = pipe.settings()
    env = dict(os.environ, **pipe.env())
    procs: list[subprocess.Popen] = []
    top = f"{nodes} broker{'s' if nodes > 1 else ''}"
    try:
        pipe.up(timeout_s=300)
        ch = make_client(s)
        migrate(ch, BARE_DB)
        procs.append(start(["benchmarks.e2e.receiver", str(PORTS.siem)], env, tmp / "receiver.log"))
        # ------------------------------------------------------------ the bare chain (ceiling)
        a, b = f"bench.scale.in.{uuid.uuid4().hex[:6]}", f"bench.scale.out.{uuid.uuid4().hex[:6]}"
        rf, isr = (3, 2) if nodes >= 3 else (1, 1)
        specs = [
            TopicSpec(
                t,
                6,
                rf,
                3_600_000,
                "producer",
                [],
                [],
                "",
                max_message_bytes=8 << 20,
                min_insync_replicas=isr,
            )
            for t in (a, b)
        ]
        asyncio.run(ensure_topics(s, specs))
        hec = f"http://127.0.0.1:{PORTS.siem}/services/collector/event"
        bare = {
            "http": start(["benchmarks.e2e.bare", "http", str(BARE_HTTP_PORT), a], env, tmp / "bare.log"),
            "hop": start(["benchmarks.e2e.bare", "hop", a, b], env, tmp / "bare.log"),
            "sink": start(["benchmarks.e2e.bare", "sink", b, BARE_DB], env, tmp / "bare.log"),
            "forward": start(["benchmarks.e2e.bare", "forward", b, hec], env, tmp / "bare.log"),
        }
        procs += list(bare.values())
        time.sleep(5)
        bare_run = Run(ch, BARE_DB, PORTS.siem)
        bare_url = [f"http://127.0.0.1:{BARE_HTTP_PORT}/v1/events/batch"]
        pids = {f"bare {k}": p.pid for k, p in bare.items()} | infra_pids(pipe)
        asyncio.run(post_spread(bare_url, "-", batches(500, "warmbare", False)))
        wait_until(lambda: bare_run.forwarded("warmbare") >= 500, 180)
        cell = (top, "bare chain", "12 orgs")
        figures[cell] = []
        for r in range(runs):
            figures[cell].append(bare_run.sustained(bare_url, "-", n, f"bare{r}", False, pids))
            print(
                f"{' / '.join(cell)} run {r + 1}: {figures[cell][-1]['events_s']:,.0f} events/s", flush=True
            )
        for p in bare.values():
            p.terminate()
        # ------------------------------------------------------------ the pipeline, 1 and 2 instances
        run = Run(ch, s.clickhouse_database, PORTS.siem)
        for inst in (1, 2):
            pipe.instances = dict.fromkeys(STAGES, inst)
            pipe.start(wait_s=300)
            urls = [f"http://127.0.0.1:{PORTS.ingest + i * STRIDE}/v1/events/batch" for i in range(inst)]
            warm = f"warm{inst}"
            asyncio.run(post_spread(urls, pipe.ingest_token, batches(1000, warm, False)))
            wait_until(lambda w=warm: run.stored(w) >= 1000 and run.forwarded(w) >= 1000, 300)
            pids = {k: v for k, v in pipe.child_pids().items() if v and k.split("-")[0] in STAGES}
            pids |= infra_pids(pipe)
            for big in (False, True):
                cell = (top, f"{inst} per stage", "1 big org" if big else "12 orgs")
                figures[cell] = []
                for r in range(runs):
                    phase = f"{'b' if big else 'm'}{inst}x{r}"
                    figures[cell].append(run.sustained(urls, pipe.ingest_token, n, phase, big, pids))
                    print(
                        f"{' / '.join(cell)} run {r + 1}: {figures[cell][-1]['events_s']:,.0f} events/s",
                        flush=True,
                    )
            for k, p in pids.items():
                rss[(top, inst, k)] = peak_rss_mb(p)
            pipe.stop()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        pipe.down()


def report(figures: dict, n: int, runs: int) -> None:
    med = {cell: {k: median(x[k] for x in v) for k in v[0]} for cell, v in figures.items() if v}
    print(f"\n## Scale-out ({n:,} events of ~1 KB per run, medians of {runs} runs, 2-core box)\n")
    print(
        "| Kafka | processes | workload | stored AND forwarded (events/s) | ratio to the bare chain | "
        "CPU-µs per event, all processes |"
    )
    print("|---|---|---|---|---|---|")
    for cell, m in med.items():
        ceiling = med.get((cell[0], "bare chain", "12 orgs"), {}).get("events_s", 0)
        total = sum(v for k, v in m.items() if k.startswith("cpu:"))
        r = "—" if cell[1] == "bare chain" else f"{ratio(m['events_s'], ceiling):.2f}"
        print(f"| {cell[0]} | {cell[1]} | {cell[2]} | {m['events_s']:,.0f} | {r} | {total:.0f} |")

    print("\n### CPU-µs per event of each process\n")
    cells = [c for c in med if c[1] != "bare chain"]
    print("| process | " + " | ".join(f"{c[0]}, {c[1]}, {c[2]}" for c in cells) + " |")
    print("|---|" + "---|" * len(cells))
    names = sorted({k[4:] for c in cells for k in med[c] if k.startswith("cpu:")})
    for name in names:
        vals = [med[c].get(f"cpu:{name}") for c in cells]
        print(f"| {name} | " + " | ".join("" if v is None else f"{v:.1f}" for v in vals) + " |")
    bare_cells = [c for c in med if c[1] == "bare chain"]
    print("\n| bare chain process | " + " | ".join(c[0] for c in bare_cells) + " |")
    print("|---|" + "---|" * len(bare_cells))
    for name in sorted({k[4:] for c in bare_cells for k in med[c] if k.startswith("cpu:")}):
        vals = [med[c].get(f"cpu:{name}") for c in bare_cells]
        print(f"| {name} | " + " | ".join("" if v is None else f"{v:.1f}" for v in vals) + " |")

    # What each stage needs per 100k events/s, from the 3-broker, 2-per-stage, one-big-org cell (the
    # hardest): CPU-µs per event x 100k = CPU-s per s = cores. Instances of a stage are summed.
    pick = next((c for c in cells if c[0].startswith("3") and c[1].startswith("2") and "big" in c[2]), None)
    if pick:
        print(f"\n### Cores per 100,000 events/s, from: {', '.join(pick)}\n")
        print("| stage | CPU-µs per event (all instances) | cores per 100k events/s |")
        print("|---|---|---|")
        groups: dict[str, float] = {}
        for k, v in med[pick].items():
            if k.startswith("cpu:"):
                name = k[4:]
                stage = "kafka (3 brokers)" if name.startswith("kafka") else name.split("-")[0]
                groups[stage] = groups.get(stage, 0.0) + v
        for stage, us in sorted(groups.items(), key=lambda x: -x[1]):
            print(f"| {stage} | {us:.1f} | {us / 10:.1f} |")
        total = sum(groups.values())
        print(f"| all | {total:.1f} | {total / 10:.1f} |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=int(os.environ.get("BENCH_SCALE_EVENTS", "50000")))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--brokers", default="1,3", help="Kafka topologies to measure, e.g. 1,3")
    args = ap.parse_args()
    figures: dict = {}
    rss: dict = {}
    with tempfile.TemporaryDirectory(prefix="auditpipe-bench-scale-") as tmp:
        for nodes in (int(x) for x in args.brokers.split(",")):
            topology(nodes, args.events, args.runs, Path(tmp), figures, rss)
    report(figures, args.events, args.runs)
    if rss:
        top = max(rss.items(), key=lambda x: x[1])
        print(f"\nLargest peak RSS: {top[0][2]} ({top[0][0]}, {top[0][1]} per stage) {top[1]:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
