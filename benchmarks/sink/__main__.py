"""``python -m benchmarks.sink [--events N] [--reps 3]``: the sink beside ClickHouse ingesting the same topic.

Per repetition (medians of ``--reps`` are printed; the order of the two alternates), each in a fresh
migrated database:

1. **ceiling**: ClickHouse's Kafka table engine would be the natural one, but this build (chdb-core,
   clickhouse-local serving HTTP) refuses ``ENGINE = Kafka`` (``LOGICAL_ERROR: Shutdown was called``: the
   message-broker schedule pool does not exist in local mode), so the ceiling is the equivalent path: the
   same messages fetched raw from Kafka (aiokafka, no decoding) in batches of 50,000 and handed to
   ClickHouse as ``INSERT ... FORMAT JSONAsString`` into the schema's own input table (``events_input``,
   whose materialized view fills ``events`` and, through it, ``events_by_target`` / ``events_by_time``) —
   ClickHouse doing all parsing and writing into the same tables as the sink, as the Kafka engine's view
   would. On a schema without ``events_input`` (the code before migration 0012) the benchmark creates
   an equivalent Null table and view itself.
2. **sink**: ``auditpipe sink`` (a subprocess, default batching) drains the same topic into the same
   table shape, first-content-wins lookup included.

Rates are measured from the start of consumption (the ceiling's first fetch; the moment the sink's
consumer group is stable, so process start and the group join are excluded) to the last row stored;
CPU-µs per event of the writer's process and of the ClickHouse server process over the same window (from
/proc; ClickHouse is shared with whatever else runs on the box, so its figure is an upper bound); peak RSS
of the sink. After the last repetition, committed lag is
sampled while events arrive at half the measured rate.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import TopicPartition

from benchmarks.measure import median, peak_rss_mb, proc_cpu_s, self_cpu_s
from schemas.integrity import event_record
from schemas.topics import TopicSpec
from services.common.clickhouse import make_client
from services.common.kafka import ensure_topics, make_consumer, make_producer
from services.common.migrations import migrate
from services.common.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
PORT = 19650
CEILING_BATCH = 50_000

# What the ceiling uses on a schema without an input table (before migration 0012): ClickHouse parses.
LEGACY_SELECT = """
SELECT
    toUUID(JSONExtractString(raw, 'event_id')) AS event_id,
    JSONExtractString(raw, 'org_id') AS org_id,
    parseDateTime64BestEffort(JSONExtractString(raw, 'occurred_at'), 3, 'UTC') AS occurred_at,
    parseDateTime64BestEffort(JSONExtractString(raw, 'received_at'), 3, 'UTC') AS received_at,
    parseDateTime64BestEffort(JSONExtractString(raw, 'enriched_at'), 3, 'UTC') AS enriched_at,
    JSONExtractString(raw, 'project_id') AS project_id,
    JSONExtractString(raw, 'environment_id') AS environment_id,
    JSONExtractString(raw, 'actor', 'type') AS actor_type,
    JSONExtractString(raw, 'actor', 'id') AS actor_id,
    JSONExtractString(raw, 'actor', 'name') AS actor_name,
    JSONExtractString(raw, 'actor', 'email') AS actor_email,
    JSONExtractString(raw, 'action') AS action,
    JSONExtractString(raw, 'event_type') AS event_type,
    JSONExtractString(raw, 'target', 'type') AS target_type,
    JSONExtractString(raw, 'target', 'id') AS target_id,
    JSONExtractString(raw, 'target', 'name') AS target_name,
    JSONExtractString(raw, 'source') AS source,
    toUInt16(JSONExtractUInt(raw, 'status')) AS status,
    JSONExtractString(raw, 'change') AS change,
    JSONExtractString(raw, 'client_ip') AS client_ip,
    toIPv6OrDefault(JSONExtractString(raw, 'client_ip')) AS client_ip_v6,
    JSONExtractString(raw, 'request', 'method') AS request_method,
    JSONExtractString(raw, 'request', 'path') AS request_path,
    JSONExtractRaw(raw, 'request', 'query') AS request_query,
    JSONExtractRaw(raw, 'request', 'payload') AS request_payload,
    JSONExtractString(raw, 'request', 'user_agent') AS user_agent,
    JSONExtractString(raw, 'request', 'peer_ip') AS peer_ip,
    JSONExtractString(raw, 'request', 'x_forwarded_for') AS x_forwarded_for,
    JSONExtract(raw, 'metadata', 'Map(String, String)') AS metadata,
    JSONExtractRaw(raw, 'changes') AS changes,
    JSONExtractRaw(raw, 'snapshot') AS snapshot,
    JSONExtractString(raw, 'producer') AS producer,
    JSONExtract(raw, 'sensitive_paths', 'Array(String)') AS sensitive_paths,
    JSONExtractString(raw, 'content_hash') AS content_hash,
    toUInt8(JSONExtractUInt(raw, 'schema_version')) AS schema_version,
    raw AS event_json
FROM {db}.bench_raw_in
"""

ACTIONS = ["deployment:create", "environment:delete", "service:update", "variable:update", "project:create"]


def template(i: int) -> dict:
    """One enriched event of ~0.9 KB (request payload, changes, metadata), as the enricher writes it."""
    occ = datetime.now(UTC) - timedelta(seconds=i)
    t = occ.isoformat().replace("+00:00", "Z")
    action = ACTIONS[i % len(ACTIONS)]
    return {
        "schema_version": 1,
        "event_id": str(uuid.uuid4()),
        "occurred_at": t,
        "received_at": t,
        "enriched_at": t,
        "org_id": f"org-{i % 100}",
        "project_id": f"proj-{i % 7}",
        "environment_id": f"env-{i % 3}",
        "actor": {"type": "user", "id": f"u-{i % 11}", "name": f"User {i % 11}", "email": f"u{i % 11}@x.io"},
        "action": action,
        "event_type": action.split(":")[1],
        "target": {"type": action.split(":")[0], "id": f"t-{i % 101}", "name": f"Target {i}"},
        "source": "console",
        "status": 200,
        "change": f"change number {i}",
        "client_ip": f"203.0.113.{i % 250}",
        "request": {
            "method": "POST",
            "path": f"/api/things/{i}",
            "payload": {"n": i, "pad": "x" * 300},
            "peer_ip": "10.0.0.1",
        },
        "metadata": {"i": str(i)},
        "changes": [{"field": "replicas", "before": 1, "after": 3}],
        "sensitive_paths": [],
        "producer": "bench",
    }


def make_records(n: int) -> list[tuple[bytes, bytes]]:
    """``n`` (key, value) pairs as on audit.events.v1: key = event_id, value = the canonical record.

    500 templates are canonicalised once; each copy gets a fresh event_id (same length, so the record
    stays canonical; its content_hash then describes the template, which neither path checks).
    """
    records = []
    for i in range(500):
        doc = template(i)
        records.append((doc["event_id"].encode(), event_record(doc)))
    out = []
    for i in range(n):
        old, rec = records[i % len(records)]
        new = str(uuid.uuid4()).encode()
        out.append((new, rec.replace(old, new, 1)))
    return out


async def produce(s: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    p = make_producer(s, linger_ms=20)
    await p.start()
    try:
        futs = [await p.send(topic, v, key=k) for k, v in records]
        for f in futs:
            await f
    finally:
        await p.stop()


def clickhouse_pid(s: Settings) -> int | None:
    """The pid of the process listening on ClickHouse's HTTP port (from /proc/net/tcp* and fds)."""
    port = s.clickhouse_port
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f[9])
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            for fd in os.listdir(f"/proc/{d}/fd"):
                link = os.readlink(f"/proc/{d}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return int(d)
        except OSError:
            continue
    out = subprocess.run(["pgrep", "-f", "services.common.stack.ch_server"], capture_output=True, text=True)
    pids = [int(x) for x in out.stdout.split()]
    return pids[0] if len(pids) == 1 else None


def count(client, table: str) -> int:  # noqa: ANN001
    return int(client.query(f"SELECT count() FROM {table}").result_rows[0][0])  # noqa: S608 - bench


@dataclass
class Window:
    """First stored row -> all stored: rows in the window, seconds, CPU seconds of the two processes."""

    rows: int
    seconds: float
    writer_cpu_s: float
    ch_cpu_s: float

    @property
    def rate(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0

    def us(self, cpu_s: float) -> float:
        return cpu_s * 1e6 / self.rows if self.rows else 0.0


class Clock:
    """A start mark: wall time and the CPU seconds of the writer's and ClickHouse's processes."""

    def __init__(self, writer_cpu, ch_pid: int | None) -> None:  # noqa: ANN001
        self.writer_cpu = writer_cpu
        self.ch_cpu = (lambda: proc_cpu_s(ch_pid)) if ch_pid else (lambda: 0.0)
        self.mark()

    def mark(self) -> None:
        self.t0, self.w0, self.c0 = time.perf_counter(), self.writer_cpu(), self.ch_cpu()

    def window(self, rows: int) -> Window:
        return Window(
            rows, time.perf_counter() - self.t0, self.writer_cpu() - self.w0, self.ch_cpu() - self.c0
        )


async def wait_rows(client, table: str, n: int, limit_s: float = 600) -> None:  # noqa: ANN001
    """Poll ``count()`` of ``table`` every 50 ms until it holds ``n`` rows."""
    deadline = time.monotonic() + limit_s
    while (c := await asyncio.to_thread(count, client, table)) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{table}: {c}/{n} rows after {limit_s:.0f} s")
        await asyncio.sleep(0.05)


async def wait_group_stable(s: Settings, group: str, proc: subprocess.Popen, limit_s: float = 120) -> None:
    """Until the consumer group has its members and assignment (the sink starts fetching right after)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
    await admin.start()
    try:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"sink exited with {proc.returncode}")
            resp = await admin.describe_consumer_groups([group])
            groups = resp[0].groups if resp else []
            if groups and groups[0][2] == "Stable" and groups[0][5]:
                return
            await asyncio.sleep(0.02)
        raise TimeoutError(f"group {group} not stable after {limit_s:.0f} s")
    finally:
        await admin.close()


async def ceiling(s: Settings, client, db: str, topic: str, n: int, ch_pid: int | None) -> Window:  # noqa: ANN001
    """Raw fetch -> INSERT FORMAT JSONAsString into the input table; ClickHouse parses and writes."""
    has_input = count(client, f"system.tables WHERE database = '{db}' AND name = 'events_input'") > 0
    table = f"{db}.events_input"
    if not has_input:
        client.command(f"CREATE TABLE {db}.bench_raw_in (raw String) ENGINE = Null")
        client.command(
            f"CREATE MATERIALIZED VIEW {db}.bench_raw_mv TO {db}.events AS {LEGACY_SELECT.format(db=db)}"
        )
        table = f"{db}.bench_raw_in"
    c = make_consumer(s, topic, group_id=None, fetch_max_bytes=64 * 1024 * 1024)
    await c.start()
    loop = asyncio.get_running_loop()

    def insert(chunk: list[bytes]) -> None:
        client.raw_insert(table, None, insert_block=b"\n".join(chunk) + b"\n", fmt="JSONAsString")

    async def drain() -> None:
        got = 0
        buf: list[bytes] = []
        pending: asyncio.Future | None = None
        while got < n:
            recs = await c.getmany(timeout_ms=500, max_records=CEILING_BATCH)
            for msgs in recs.values():
                buf.extend(m.value for m in msgs)
                got += len(msgs)
            if len(buf) >= CEILING_BATCH or (got >= n and buf):
                if pending is not None:
                    await pending  # one insert in flight while the next batch is fetched, like the sink
                pending = loop.run_in_executor(None, insert, buf)
                buf = []
        if pending is not None:
            await pending

    try:
        clock = Clock(self_cpu_s, ch_pid)
        task = asyncio.create_task(drain())
        await wait_rows(client, f"{db}.events", n)
        w = clock.window(n)
        await task
        return w
    finally:
        await c.stop()


def metric_lag() -> float | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=2) as r:  # noqa: S310
            body = r.read().decode()
    except OSError:
        return None
    vals = [
        float(x.rsplit(" ", 1)[1])
        for x in body.splitlines()
        if x.startswith("auditpipe_consumer_lag_messages{")
    ]
    return sum(vals) if vals else None


def start_sink(db: str, topic: str, group: str) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(
        {
            "AUDITPIPE_CLICKHOUSE_DATABASE": db,
            "AUDITPIPE_SINK__TOPIC": topic,
            "AUDITPIPE_SINK__CONSUMER_GROUP": group,
            "AUDITPIPE_SINK__ARCHIVE_ENABLED": "false",
            "AUDITPIPE_SINK__PORT": str(PORT),
            "AUDITPIPE_LOG_LEVEL": "WARNING",
        }
    )
    return subprocess.Popen([sys.executable, "-m", "services.cli", "sink"], cwd=REPO, env=env)


def stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def steady_lag(s: Settings, client, db: str, topic: str, group: str, rate: int, total: int) -> None:  # noqa: ANN001
    """Events at ``rate``/s for 10 s while the sink runs; committed lag sampled every 0.5 s."""
    extra = make_records(rate * 10)
    samples: list[int] = []

    async def sample() -> None:
        c = make_consumer(s, group_id=group)
        await c.start()
        parts = [TopicPartition(topic, p) for p in range(6)]
        try:
            while True:
                ends = await c.end_offsets(parts)
                lag = 0
                for tp in parts:
                    lag += ends[tp] - (await c.committed(tp) or 0)
                samples.append(lag)
                await asyncio.sleep(0.5)
        finally:
            await c.stop()

    sampler = asyncio.create_task(sample())
    p = make_producer(s)
    await p.start()
    t0 = time.perf_counter()
    for sec in range(10):
        futs = [await p.send(topic, v, key=k) for k, v in extra[sec * rate : (sec + 1) * rate]]
        for f in futs:
            await f
        await asyncio.sleep(max(0.0, (sec + 1) - (time.perf_counter() - t0)))
    await p.stop()
    while count(client, f"{db}.events") < total + len(extra):  # noqa: ASYNC110 - polling another process
        await asyncio.sleep(0.2)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    if not samples:
        print("committed lag: no samples")
        return
    samples.sort()
    med = median(samples)
    print(
        f"committed lag at {rate:,} ev/s for 10 s: median {med:,.0f} msgs (~{med / rate:.2f} s), "
        f"p95 {samples[max(0, int(len(samples) * 0.95) - 1)]:,}, max {samples[-1]:,}",
        flush=True,
    )


async def main(n: int, reps: int) -> int:
    s = load_settings()
    suffix = uuid.uuid4().hex[:8]
    topic = f"bench.sink.{suffix}"
    admin_client = make_client(s, send_receive_timeout=600)
    ch_pid = clickhouse_pid(s)
    await ensure_topics(s, [TopicSpec(topic, 6, 1, 3_600_000, "producer", [], [], "")])
    dbs: list[str] = []
    proc = None
    try:
        print(f"pre-filling {topic} with {n:,} events (key = event_id, canonical records) ...", flush=True)
        records = make_records(n)
        avg = sum(len(v) for _, v in records) / n
        await produce(s, topic, records)
        print(f"ClickHouse server pid: {ch_pid or 'not found (CPU not measured)'}", flush=True)
        runs: list[dict[str, float]] = []
        for rep in range(reps):
            db_c, db_s = f"bench_sink_{suffix}_c{rep}", f"bench_sink_{suffix}_s{rep}"
            dbs += [db_c, db_s]
            migrate(admin_client, db_c)
            migrate(admin_client, db_s)
            group = f"bench-sink-{suffix}-{rep}"
            # the order alternates, so a change of the box's load during a repetition favours neither
            if rep % 2 == 0:
                c = await ceiling(s, admin_client, db_c, topic, n, ch_pid)
            if proc is not None:
                stop(proc)
            proc = start_sink(db_s, topic, group)
            pid = proc.pid
            await wait_group_stable(s, group, proc)
            clock = Clock(lambda pid=pid: proc_cpu_s(pid), ch_pid)
            await wait_rows(admin_client, f"{db_s}.events", n)
            w = clock.window(n)
            rss = peak_rss_mb(proc.pid)
            if rep % 2 == 1:
                c = await ceiling(s, admin_client, db_c, topic, n, ch_pid)
            run = {
                "ceiling": c.rate,
                "sink": w.rate,
                "ratio": w.rate / c.rate if c.rate else 0.0,
                "ceiling_py_us": c.us(c.writer_cpu_s),
                "ceiling_ch_us": c.us(c.ch_cpu_s),
                "sink_py_us": w.us(w.writer_cpu_s),
                "sink_ch_us": w.us(w.ch_cpu_s),
                "sink_rss": rss,
            }
            runs.append(run)
            print(
                f"rep {rep + 1}/{reps}: ceiling {c.rate:,.0f}/s, sink {w.rate:,.0f}/s, "
                f"ratio {run['ratio']:.2f}; "
                f"CPU-µs/event sink {run['sink_py_us']:.1f} + ClickHouse {run['sink_ch_us']:.1f}, "
                f"ceiling {run['ceiling_py_us']:.1f} + ClickHouse {run['ceiling_ch_us']:.1f}; "
                f"sink peak RSS {rss:.0f} MB",
                flush=True,
            )
        med = {k: median(r[k] for r in runs) for k in runs[0]}
        print(
            f"\n=== sink benchmark: {n:,} events x ~{avg:.0f} B, 6 partitions, default batching, "
            f"medians of {reps} ==="
        )
        print("| path | events/s | CPU-µs/event (writer) | CPU-µs/event (ClickHouse) | peak RSS |")
        print("|---|---|---|---|---|")
        print(
            f"| ceiling: raw fetch -> JSONAsString -> input table | {med['ceiling']:,.0f} | "
            f"{med['ceiling_py_us']:.1f} | {med['ceiling_ch_us']:.1f} | |"
        )
        print(
            f"| auditpipe sink | {med['sink']:,.0f} | {med['sink_py_us']:.1f} | {med['sink_ch_us']:.1f} | "
            f"{med['sink_rss']:.0f} MB |"
        )
        print(f"\nratio sink / ceiling (median of per-run ratios): {med['ratio']:.2f}", flush=True)
        lag = metric_lag()
        if lag is not None:
            print(f"lag after draining (metric): {lag:,.0f} msgs")
        await steady_lag(
            s,
            admin_client,
            dbs[-1],
            topic,
            f"bench-sink-{suffix}-{reps - 1}",
            max(1000, int(med["sink"] / 2)),
            n,
        )
        return 0
    finally:
        stop(proc)
        for db in dbs:
            admin_client.command(f"DROP DATABASE IF EXISTS {db} SYNC")
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
        await admin.start()
        try:
            await admin.delete_topics([topic])
        finally:
            await admin.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    sys.exit(asyncio.run(main(a.events, a.reps)))
