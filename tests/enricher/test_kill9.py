"""kill -9 (and SIGTERM) the enricher in the middle of thousands of events, restart: no raw event_id
is missing, and every copy of an event that was enriched twice is byte-identical."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest

from schemas.topics import DEADLETTER, EVENTS, RAW
from tests.enricher.helpers import EnricherProcess, end_offsets_total, enricher_env, produce, read_all

pytestmark = pytest.mark.kafka

PORT = 19511
N = 20_000


@pytest.mark.parametrize("how", ["kill -9", "SIGTERM"])
async def test_kill9_mid_stream_then_restart_loses_nothing(how: str, topic_names, tmp_path: Path) -> None:  # noqa: ANN001
    topics = topic_names(RAW, EVENTS, DEADLETTER)
    suffix = uuid.uuid4().hex[:8]
    env = enricher_env(topics, suffix, PORT)
    ids = [str(uuid.uuid4()) for _ in range(N)]
    orgs = [f"org-{i % 7}" for i in range(N)]
    docs = [
        {
            "event_id": eid,
            "occurred_at": "2026-11-22T10:00:00Z",
            "org_id": org,
            "action": "deployment:create",
            "actor": {"id": "u-1", "name": "Ada"},
            "request": {"payload": {"password": "pw", "n": i}, "peer_ip": "10.0.0.1"},
        }
        for i, (eid, org) in enumerate(zip(ids, orgs, strict=True))
    ]
    # half as single-event records, half in envelopes of 50 (as the ingest writes them)
    half = N // 2
    records = [(d["event_id"].encode(), orjson.dumps(d)) for d in docs[:half]]
    records += [(docs[i]["event_id"].encode(), orjson.dumps(docs[i : i + 50])) for i in range(half, N, 50)]
    await produce(topics[RAW], records)
    first = EnricherProcess(env, tmp_path / "enricher.log").start()
    killed_at = 0
    try:
        deadline = time.monotonic() + 60  # noqa: ASYNC110
        while time.monotonic() < deadline:
            killed_at = await end_offsets_total(topics[EVENTS])
            if killed_at >= 1:
                break
            await asyncio.sleep(0.05)
        if how == "kill -9":
            first.kill9()
        else:
            assert first.stop(timeout=30) == 0, first.logs()[-2000:]
    finally:
        if first.proc and first.proc.poll() is None:
            first.kill9()
    assert 0 < killed_at < N, f"{how} must land mid-stream (saw {killed_at} of {N})"

    second = EnricherProcess(env, tmp_path / "enricher.log").start()
    try:
        deadline = time.monotonic() + 120
        seen: set[str] = set()
        total = 0
        copies: dict[str, set[bytes]] = {}
        while time.monotonic() < deadline:
            recs = await read_all(topics[EVENTS])
            total = len(recs)
            copies = {}
            for _, v in recs:
                copies.setdefault(orjson.loads(v)["event_id"], set()).add(v)
            seen = set(copies)
            if seen >= set(ids):
                break
            await asyncio.sleep(1.0)
    finally:
        code = second.stop()
    missing = set(ids) - seen
    assert not missing, f"{len(missing)} of {N} raw events missing after {how} at ~{killed_at}"
    assert len(seen) == N
    assert total >= N  # duplicates allowed (at least once), reported here
    # a duplicate is the same bytes: re-enriching a record after a crash changes nothing
    assert all(len(v) == 1 for v in copies.values()), [k for k, v in copies.items() if len(v) > 1][:3]
    print(f"{how} after {killed_at} outputs; {total} records for {N} ids ({total - N} duplicates)")
    assert code == 0
    assert not await read_all(topics[DEADLETTER])
