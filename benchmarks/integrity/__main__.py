"""``python -m benchmarks.integrity``: what tamper evidence costs.

ClickHouse is a private server on port 20472 (data kept in ``.stack/bench-integrity``), so its CPU time is
this benchmark's alone; Kafka is the local stack's.

1. **Sealing as a share of the sink** (same run, same events): N canonical events are produced to a
   fresh topic and drained by ``auditpipe sink`` (a subprocess) into a fresh database; then one seal run
   covers exactly those events. CPU seconds of each process (the sink's, this process's for sealing, and
   the ClickHouse server's during each phase) per event; the share printed is sealing's total over the
   sink's total. Median of 3 runs.
2. **Verification at scale**: the query benchmark's generator fills ``bench_integrity`` with 10 M events
   (100 orgs, 60 days; reused when already there), one seal run covers them, then a full
   ``verify`` runs 3 times: wall time (target < 60 s), CPU per process, beside the same-run ceiling —
   ClickHouse alone reading and SHA-256-hashing every stored record once.

Run under the benchmark lock: ``flock /tmp/auditpipe-bench.lock python -m benchmarks.integrity``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from benchmarks.measure import CpuMeter, median, medians_of, proc_cpu_s, ratio
from schemas.integrity import hash_member, verify_record
from schemas.topics import TopicSpec
from services.common.audit_events import AuditPublisher
from services.common.clickhouse import make_client
from services.common.kafka import ensure_topics, make_producer
from services.common.migrations import migrate
from services.common.settings import Settings, load_settings
from services.integrity.seal import seal_once
from services.integrity.topic import read_digests
from services.integrity.verify import verify
from tests.integrity.helpers import record

REPO = Path(__file__).resolve().parents[2]
SINK_PORT = 20480
WINDOW_S = 60
BENCH_DB = "bench_integrity"


CH_PORT = 20472


def private_clickhouse(shared: Settings) -> tuple[Settings, Any]:
    """Settings pointing at a private ClickHouse (started when not running) and its Stack."""
    from services.common.stack.manager import Stack

    s = shared.model_copy(
        update={
            "clickhouse_url": f"http://127.0.0.1:{CH_PORT}",
            "stack": shared.stack.model_copy(update={"state_dir": REPO / ".stack" / "bench-integrity"}),
        }
    )
    st = Stack(s)
    st.ch_up()
    deadline = time.monotonic() + 120
    while st.ch_version() is None:
        if time.monotonic() > deadline:
            raise RuntimeError("private ClickHouse did not start")
        time.sleep(0.5)
    return s, st


def clickhouse_pid(s: Settings) -> int:
    """The ClickHouse server process listening on the configured port (for its CPU time)."""
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{s.clickhouse_port}"], capture_output=True, text=True, check=True
    ).stdout
    return int(out.split("pid=", 1)[1].split(",", 1)[0])


def settings_for(
    s: Settings, db: str, tmp: Path, digest_topic: str, raw_topic: str, **integ: Any
) -> Settings:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp / "signing.key"
    if not key.exists():
        key.write_bytes(
            Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    i = s.integrity.model_copy(
        update={"signing_key_file": key, "digest_topic": digest_topic, "audit_topic": raw_topic, **integ}
    )
    r = s.retention.model_copy(update={"archive_dir": tmp / "archives"})
    return s.model_copy(update={"clickhouse_database": db, "integrity": i, "retention": r})


async def seal(s: Settings, require: bool = True) -> None:
    pub = AuditPublisher(s, s.integrity.audit_topic)
    try:
        res = await seal_once(s, pub)
        if require and res.horizon is None:
            raise RuntimeError(f"nothing sealed: {res.waiting}")
    finally:
        await pub.close()


def canonical_events(n: int) -> list[tuple[bytes, bytes]]:
    """(key, value) of n distinct canonical records: 500 built with the reference JCS (schemas.integrity),
    then copies with a fresh event id and their content_hash recomputed (same bytes otherwise)."""
    templates = [record(i, org=f"org-{i % 50}") for i in range(500)]
    out = []
    for i in range(n):
        t = templates[i % len(templates)]
        doc = orjson.loads(t)
        new_id = str(uuid.uuid4())
        body = t.replace(hash_member(doc["content_hash"]), b"", 1).replace(
            doc["event_id"].encode(), new_id.encode()
        )
        h = hashlib.sha256(body).hexdigest()
        # JCS order: "content_hash" sorts right before "enriched_at" in these records
        rec = body.replace(b',"enriched_at":', hash_member(h) + b',"enriched_at":', 1)
        out.append((new_id.encode(), rec))
    assert all(verify_record(v, strict=True) for _, v in out[:3])
    return out


async def share_of_sink(base: Settings, n: int, tmp: Path) -> dict[str, float]:
    suffix = uuid.uuid4().hex[:8]
    tmp = tmp / suffix  # digest files of this run only
    tmp.mkdir()
    topic, digests, raw = (
        f"bench.integ.events.{suffix}",
        f"bench.integ.digests.{suffix}",
        f"bench.integ.raw.{suffix}",
    )
    db = f"bench_integ_{suffix}"
    await ensure_topics(
        base,
        [
            TopicSpec(t, p, 1, 3_600_000, "producer", [], [], "")
            for t, p in ((topic, 6), (digests, 1), (raw, 1))
        ],
    )
    client = make_client(base, send_receive_timeout=600)
    migrate(client, db)
    group = f"bench-integ-sink-{suffix}"
    s = settings_for(base, db, tmp, digests, raw, window_s=WINDOW_S, grace_s=0.0)
    s = s.model_copy(update={"sink": s.sink.model_copy(update={"topic": topic, "consumer_group": group})})
    ch_pid = clickhouse_pid(base)
    try:
        values = canonical_events(n)
        p = make_producer(base)
        await p.start()
        try:
            futs = [await p.send(topic, v, key=k) for k, v in values]
            for f in futs:
                await f
        finally:
            await p.stop()
        env = dict(os.environ)
        env.update(
            AUDITPIPE_CLICKHOUSE_URL=s.clickhouse_url,
            AUDITPIPE_CLICKHOUSE_DATABASE=db,
            AUDITPIPE_SINK__TOPIC=topic,
            AUDITPIPE_SINK__CONSUMER_GROUP=group,
            AUDITPIPE_SINK__ARCHIVE_ENABLED="false",
            AUDITPIPE_SINK__PORT=str(SINK_PORT),
            AUDITPIPE_LOG_LEVEL="WARNING",
        )
        proc = subprocess.Popen([sys.executable, "-m", "services.cli", "sink"], cwd=REPO, env=env)  # noqa: ASYNC220
        try:
            ch0 = proc_cpu_s(ch_pid)
            t0 = time.perf_counter()
            while int(client.query(f"SELECT count() FROM {db}.events").result_rows[0][0]) < n:
                if proc.poll() is not None:
                    raise RuntimeError(f"sink exited with {proc.returncode}")
                if time.perf_counter() - t0 > 900:
                    raise TimeoutError("sink did not drain in 900 s")
                await asyncio.sleep(0.25)
            await asyncio.sleep(1.5)  # its last commit
            sink_cpu = proc_cpu_s(proc.pid)
            sink_ch = proc_cpu_s(ch_pid) - ch0
        finally:
            proc.terminate()
            proc.wait(60)
        # the last window closes (hourly in production; a minute here, so a run covers a few windows)
        await asyncio.sleep(WINDOW_S - time.time() % WINDOW_S + 0.5)
        meter = CpuMeter({"sealer": os.getpid(), "clickhouse": ch_pid}).start()
        t0 = time.perf_counter()
        await seal(s)
        seal_s = time.perf_counter() - t0
        used = meter.stop()
        sealed = int(client.query(f"SELECT count() FROM {db}.sealed_events").result_rows[0][0])
        assert sealed == n, (sealed, n)
        return {
            "sink_us": sink_cpu * 1e6 / n,
            "sink_ch_us": sink_ch * 1e6 / n,
            "seal_us": used["sealer"] * 1e6 / n,
            "seal_ch_us": used["clickhouse"] * 1e6 / n,
            "seal_wall_s": seal_s,
            "share": ratio(used["sealer"] + used["clickhouse"], sink_cpu + sink_ch),
        }
    finally:
        client.command(f"DROP DATABASE IF EXISTS {db} SYNC")


def verify_at_scale(base: Settings, total: int, tmp: Path, runs: int) -> None:
    from benchmarks.query.generate import generate

    client = make_client(base, send_receive_timeout=3600)
    t0 = time.perf_counter()
    print(f"filling {BENCH_DB} with {total:,} events (reused when present) ...", flush=True)
    if generate(base, BENCH_DB, total=total):
        print(f"  generated in {time.perf_counter() - t0:.0f} s", flush=True)
    # a fresh start for sealing each run: drop the integrity tables (0015) and apply it again
    for t in ("sealed_events", "digests", "digest_published", "seal_runs", "integrity_checks"):
        client.command(f"DROP TABLE IF EXISTS {BENCH_DB}.{t} SYNC")
    client.command(f"DELETE FROM {BENCH_DB}.schema_migrations WHERE version = 15")
    migrate(client, BENCH_DB)
    rows = int(client.query(f"SELECT uniqExact(event_id) FROM {BENCH_DB}.events").result_rows[0][0])
    suffix = uuid.uuid4().hex[:8]
    digests, raw = f"bench.integ.digests.{suffix}", f"bench.integ.raw.{suffix}"
    asyncio.run(
        ensure_topics(base, [TopicSpec(t, 1, 1, 3_600_000, "producer", [], [], "") for t in (digests, raw)])
    )
    scale_dir = tmp / "scale"
    scale_dir.mkdir()
    s = settings_for(base, BENCH_DB, scale_dir, digests, raw, window_s=WINDOW_S, grace_s=0.0)
    newest = client.query(f"SELECT max(inserted_at) FROM {BENCH_DB}.events").result_rows[0][0].timestamp()
    if newest > time.time() - WINDOW_S:
        time.sleep(max(0.0, WINDOW_S - time.time() % WINDOW_S + 0.5))  # the generator's last window closes
    # the sink topic of this database is none: the generator wrote straight into ClickHouse
    s = s.model_copy(update={"sink": s.sink.model_copy(update={"topic": f"bench.none.{suffix}"})})
    ch_pid = clickhouse_pid(base)
    meter = CpuMeter({"sealer": os.getpid(), "clickhouse": ch_pid}).start()
    t0 = time.perf_counter()
    asyncio.run(seal(s))
    seal_s = time.perf_counter() - t0
    used = meter.stop()
    sealed = int(client.query(f"SELECT count() FROM {BENCH_DB}.sealed_events").result_rows[0][0])
    print(f"  sealed {sealed:,} events in {seal_s:.1f} s (sealer {used['sealer']:.1f} s CPU, ClickHouse "
          f"{used['clickhouse']:.1f} s CPU)", flush=True)  # fmt: skip
    ceil, times, cpu = [], [], []
    for i in range(runs):
        # the sealer runs continuously in production: catch up (a few windows) before each verification,
        # or its head would rightly be reported stale
        asyncio.run(seal(s, require=False))
        records = asyncio.run(read_digests(s))
        m = CpuMeter({"clickhouse": ch_pid}).start()
        t0 = time.perf_counter()
        client.query(f"SELECT count() FROM {BENCH_DB}.events WHERE NOT ignore(SHA256(event_json))")
        ceil.append(time.perf_counter() - t0)
        m.stop()
        m = CpuMeter({"verifier": os.getpid(), "clickhouse": ch_pid}).start()
        t0 = time.perf_counter()
        rep = verify(s, records)
        times.append(time.perf_counter() - t0)
        cpu.append(m.stop())
        print(
            f"  run {i + 1}: verify {times[-1]:.1f} s ({rep.summary()}); ceiling {ceil[-1]:.1f} s", flush=True
        )
        if not rep.ok:
            print("  findings:", [f.to_dict() for f in rep.findings[:5]], flush=True)
    c = medians_of(cpu)
    print("\n=== verification at scale ===")
    print(f"events (distinct):                    {rows:>12,}")
    print(f"seal of all of them (one run):        {seal_s:>12.1f} s")
    print(f"verify, full (median of {runs}):          {median(times):>12.1f} s   (target < 60 s)")
    print(f"ceiling (ClickHouse SHA-256 of all):  {median(ceil):>12.1f} s")
    print(f"ratio verify / ceiling:               {ratio(median(times), median(ceil)):>12.2f}")
    print(f"verifier CPU-us/event:                {c['verifier'] * 1e6 / rows:>12.2f}")
    print(f"ClickHouse CPU-us/event (verify):     {c['clickhouse'] * 1e6 / rows:>12.2f}")


def print_share(m: dict[str, float], args: argparse.Namespace) -> None:
    print("\n=== sealing as a share of the sink ===")
    print(f"events per run:                        {args.sink_events:>10,}")
    print(f"sink process CPU-us/event:             {m['sink_us']:>10.1f}")
    print(f"  ClickHouse during the drain:         {m['sink_ch_us']:>10.1f}")
    print(f"sealer process CPU-us/event:           {m['seal_us']:>10.2f}")
    print(f"  ClickHouse during the seal:          {m['seal_ch_us']:>10.2f}")
    print(f"seal run wall time:                    {m['seal_wall_s']:>10.2f} s")
    print(f"sealing CPU / sink CPU (median of {args.runs}):  {m['share']:>10.3f}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=10_000_000, help="events for the verification at scale")
    ap.add_argument("--sink-events", type=int, default=100_000, help="events for the share of the sink")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--skip-scale", action="store_true")
    ap.add_argument("--skip-share", action="store_true")
    ap.add_argument("--keep-clickhouse", action="store_true", help="leave the private ClickHouse running")
    args = ap.parse_args()
    import tempfile

    base, stack = private_clickhouse(load_settings())
    with tempfile.TemporaryDirectory(prefix="auditpipe-bench-integrity-") as d:
        tmp = Path(d)
        runs = []
        for i in range(0 if args.skip_share else args.runs):
            r = asyncio.run(share_of_sink(base, args.sink_events, tmp))
            runs.append(r)
            print(
                f"  run {i + 1}: CPU-us/event sink {r['sink_us']:.1f} + ClickHouse {r['sink_ch_us']:.1f}; "
                f"seal {r['seal_us']:.1f} + ClickHouse {r['seal_ch_us']:.1f}; share {r['share']:.3f}",
                flush=True,
            )
        m = medians_of(runs)
        if runs:
            print_share(m, args)
        if not args.skip_scale:
            verify_at_scale(base, args.events, tmp, args.runs)
    if not args.keep_clickhouse:
        from services.common.stack.manager import CH_MARKER
        from services.common.stack.process import read_pid, stop

        stop(read_pid(stack.cdir / "pid"), CH_MARKER, timeout_s=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
