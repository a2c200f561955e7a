"""``python -m benchmarks.forwarder [--events 20000] [--reps 3]``: events/s through ``auditpipe forwarder``
(Kafka -> filter/encode -> deliver -> commit, its own process) to a local Splunk HEC receiver and to
Debian's rsyslog, each beside its ceiling measured in the same run: a bare sender in a process of its own
(``benchmarks.forwarder.bare``) posting the same events as pre-encoded HEC bodies with httpx, or writing
them pre-framed to one TCP socket, in the same batches (500).

The HEC receiver runs in this process and serves both senders alike; rsyslog is its own process. The
forwarder's rate is measured from its first delivered event to the last (the consumer-group join is
excluded), the bare sender's from "go" to the last event received. Printed per path, medians of the
repetitions: events/s, CPU-µs per event of the sending process (from /proc for the forwarder, the
sender's own process time for the bare one), the forwarder's peak RSS, and the ratio forwarder / bare.
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
from datetime import UTC, datetime
from pathlib import Path

import orjson

from benchmarks.forwarder.bare import write_chunks
from benchmarks.measure import median, peak_rss_mb, proc_cpu_s
from schemas.integrity import event_record
from schemas.topics import EVENTS, TopicSpec, load_topics
from services.common.kafka import ensure_topics, make_producer
from services.common.logging import configure_logging
from services.common.settings import Settings, load_settings
from tests.siem_forwarder.events import make_event
from tests.siem_forwarder.harness import Harness
from tests.siem_forwarder.receivers.rsyslog import Rsyslog

REPO = Path(__file__).resolve().parents[2]
HEC_PORT = 20110
SYSLOG_PORT = 20111
HEALTH_PORT = 20112
BATCH = 500
PROFILE: Path | None = None  # --profile DIR


def make_records(n: int) -> list[tuple[bytes, bytes]]:
    """(key, value) pairs as on audit.events.v1: key = event_id, value = the canonical record."""
    templates = []
    for i in range(200):
        doc = make_event(i)
        templates.append((doc["event_id"].encode(), event_record(doc)))
    out = []
    for i in range(n):
        old, rec = templates[i % len(templates)]
        new = str(uuid.uuid4()).encode()
        out.append((new, rec.replace(old, new, 1)))
    return out


async def make_topic(settings: Settings, records: list[tuple[bytes, bytes]]) -> str:
    base = load_topics()[EVENTS]
    topic = f"bench.forwarder.{uuid.uuid4().hex[:8]}"
    await ensure_topics(settings, [TopicSpec(topic, base.partitions, 1, 3_600_000, "producer", [], [], "")])
    p = make_producer(settings)
    await p.start()
    try:
        futs = [await p.send(topic, v, key=k) for k, v in records]
        await asyncio.gather(*futs)
    finally:
        await p.stop()
    return topic


def bare_payloads(records: list[tuple[bytes, bytes]]) -> tuple[list[bytes], list[bytes]]:
    """What a minimal HEC / syslog sender would send for these records, in batches of BATCH."""
    hec, sys_items = [], []
    for _, rec in records:
        occ = orjson.loads(rec)["occurred_at"]
        ts = datetime.fromisoformat(occ.replace("Z", "+00:00"))
        hec.append(
            b'{"time":%.3f,"source":"auditpipe","sourcetype":"auditpipe:event","index":"audit","event":%s}'
            % (ts.timestamp(), rec)
        )
        msg = b"<110>1 %s bench auditpipe - deployment:create - %s" % (
            ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode(),
            rec,
        )
        sys_items.append(str(len(msg)).encode() + b" " + msg)
    hec_bodies = [b"\n".join(hec[i : i + BATCH]) for i in range(0, len(hec), BATCH)]
    sys_chunks = [b"".join(sys_items[i : i + BATCH]) for i in range(0, len(sys_items), BATCH)]
    return hec_bodies, sys_chunks


def count(h: Harness) -> int:
    if isinstance(h.receiver, Rsyslog):
        return h.receiver.count_lines()
    return len(h.receiver.received)


async def wait_count(h: Harness, target: int, within: float = 180) -> None:
    deadline = time.monotonic() + within
    while count(h) < target:  # noqa: ASYNC110 - polling the receiver's output is the measurement
        if time.monotonic() > deadline:
            raise TimeoutError(f"{h.kind}: {count(h)}/{target} after {within}s")
        await asyncio.sleep(0.005)


async def run_bare(h: Harness, kind: str, chunks: list[bytes], n: int, tmp: Path) -> tuple[float, float]:
    """(events/s, CPU-µs per event of the sender)."""
    path = tmp / f"{kind}.chunks"
    write_chunks(str(path), chunks)
    argv = [sys.executable, "-m", "benchmarks.forwarder.bare", kind, str(h.port), str(path)]
    if kind == "hec":
        argv.append(os.environ["FWD_TEST_HEC_TOKEN"])
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    assert (await proc.stdout.readline()).strip() == b"ready"
    start = count(h)
    t0 = time.perf_counter()
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    await wait_count(h, start + n)
    dt = time.perf_counter() - t0
    out = (await proc.stdout.read()).decode().split()
    await proc.wait()
    cpu = float(out[out.index("cpu") + 1])
    return n / dt, cpu * 1e6 / n


def destination_toml(kind: str, name: str, topic: str) -> str:
    common = f"""
topic = "{topic}"
[[destinations]]
name = "{name}"
"""
    batch = f"""
[destinations.batch]
max_events = {BATCH}
max_seconds = 0.05
max_bytes = 4194304
"""
    if kind == "hec":
        body = f"""type = "splunk_hec"
url = "http://127.0.0.1:{HEC_PORT}"
token_env = "FWD_TEST_HEC_TOKEN"
index = "audit"
"""
    else:
        body = f"""type = "syslog"
host = "127.0.0.1"
port = {SYSLOG_PORT}
hostname = "bench"
"""
    return common + body + batch


async def run_forwarder(h: Harness, kind: str, topic: str, n: int, tmp: Path) -> tuple[float, float, float]:
    """(events/s, CPU-µs per event, peak RSS MB) of ``auditpipe forwarder`` draining ``topic``."""
    name = f"bench-{kind}-{uuid.uuid4().hex[:6]}"
    cfg = tmp / f"{name}.toml"
    cfg.write_text(destination_toml(kind, name, topic))
    env = dict(
        os.environ,
        AUDITPIPE_FORWARDER__CONFIG_FILE=str(cfg),
        AUDITPIPE_FORWARDER__PORT=str(HEALTH_PORT),
        AUDITPIPE_LOG_LEVEL="WARNING",
    )
    start = count(h)
    argv = [sys.executable, "-m", "services.cli", "forwarder"]
    proc = subprocess.Popen(argv, cwd=REPO, env=env)  # noqa: ASYNC220
    spy = profile(proc.pid, name)
    try:
        while count(h) == start:  # noqa: ASYNC110 - the window starts at the first delivered event
            if proc.poll() is not None:
                raise RuntimeError(f"forwarder exited with {proc.returncode}")
            await asyncio.sleep(0.002)
        t0, c0, first = time.perf_counter(), proc_cpu_s(proc.pid), count(h)
        await wait_count(h, start + n)
        dt, cpu = time.perf_counter() - t0, proc_cpu_s(proc.pid) - c0
        rss = peak_rss_mb(proc.pid)
        done = start + n - first
        return done / dt, cpu * 1e6 / done, rss
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes its samples and exits
            spy.wait(30)
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def profile(pid: int, name: str) -> subprocess.Popen | None:
    """With ``--profile DIR``: py-spy samples ``pid`` (idle frames too: where the time goes, waiting
    included) into ``DIR/<name>.txt`` as collapsed stacks, until SIGINT."""
    if PROFILE is None:
        return None
    spy = str(Path(sys.executable).parent / "py-spy")
    out = PROFILE / f"{name}.txt"
    cmd = [spy, "record", "--idle", "--format", "raw", "-r", "200", "-o", str(out), "--pid", str(pid)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def main(n: int, reps: int) -> None:
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
    topics: list[str] = []
    try:
        records = make_records(n)
        topic = await make_topic(settings, records)
        topics.append(topic)
        hec_bodies, sys_chunks = bare_payloads(records)
        keys = ("hec_fwd", "hec_bare", "sys_fwd", "sys_bare")
        rate: dict[str, list[float]] = {k: [] for k in keys}
        us: dict[str, list[float]] = {k: [] for k in keys}
        rss: dict[str, list[float]] = {"hec_fwd": [], "sys_fwd": []}
        for r in range(reps):
            for key, h, kind, chunks in (
                ("hec", hec, "hec", hec_bodies),
                ("sys", rs, "tcp", sys_chunks),
            ):
                v, u = await run_bare(h, kind, chunks, n, tmp)
                rate[f"{key}_bare"].append(v)
                us[f"{key}_bare"].append(u)
                v, u, m = await run_forwarder(h, "hec" if key == "hec" else "syslog", topic, n, tmp)
                rate[f"{key}_fwd"].append(v)
                us[f"{key}_fwd"].append(u)
                rss[f"{key}_fwd"].append(m)
            print(
                f"rep {r + 1}/{reps}: "
                + ", ".join(f"{k}={rate[k][-1]:,.0f}/s ({us[k][-1]:.1f} CPU-µs/ev)" for k in keys),
                flush=True,
            )
        size = median(len(v) for _, v in records)
        print(f"\n{n:,} events per run (median record {size:.0f} B), batch {BATCH}, medians of {reps}:\n")
        print("| destination | forwarder ev/s | CPU-µs/ev | peak RSS | bare ev/s | CPU-µs/ev | ratio |")
        print("|---|---|---|---|---|---|---|")
        for label, key, what in (("Splunk HEC", "hec", "httpx"), ("rsyslog TCP", "sys", "socket")):
            ratios = [f / b for f, b in zip(rate[f"{key}_fwd"], rate[f"{key}_bare"], strict=True)]
            print(
                f"| {label} | {median(rate[f'{key}_fwd']):,.0f} | {median(us[f'{key}_fwd']):.1f} | "
                f"{median(rss[f'{key}_fwd']):.0f} MB | {median(rate[f'{key}_bare']):,.0f} ({what}) | "
                f"{median(us[f'{key}_bare']):.1f} | {median(ratios):.2f} |"
            )
    finally:
        await hec.stop()
        await rs.stop()
        await delete_topics(settings, topics, prefix="audit.deadletter.v1.forwarder.bench-")


async def delete_topics(settings: Settings, topics: list[str], prefix: str) -> None:
    """The benchmark's topic and the dead-letter topics its destinations created."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = await admin.list_topics()
        gone = [t for t in existing if t in topics or t.startswith(prefix)]
        if gone:
            await admin.delete_topics(gone)
    finally:
        await admin.close()


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", type=Path, help="run the forwarder under py-spy, collapsed stacks into DIR")
    a = ap.parse_args()
    if a.profile:
        a.profile.mkdir(parents=True, exist_ok=True)
        PROFILE = a.profile
    asyncio.run(main(a.events, a.reps))
