"""``auditpipe enricher --workers 2``: two processes in one group share the partitions, each with its own
health port; SIGTERM stops both cleanly; nothing is missing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import orjson
import pytest

from schemas.topics import DEADLETTER, EVENTS, RAW
from tests.enricher.helpers import ROOT, enricher_env, produce, read_all

pytestmark = pytest.mark.kafka

PORT = 19520


async def test_two_workers_share_the_work_and_stop_cleanly(topic_names, tmp_path: Path) -> None:  # noqa: ANN001
    topics = topic_names(RAW, EVENTS, DEADLETTER)
    env = {**os.environ, **enricher_env(topics, uuid.uuid4().hex[:8], PORT)}
    n = 3000
    docs = [
        {
            "event_id": str(uuid.uuid4()),
            "occurred_at": "2026-11-22T10:00:00Z",
            "org_id": f"o{i % 5}",
            "action": "a:b",
        }
        for i in range(n)
    ]
    await produce(
        topics[RAW],
        [(d["event_id"].encode(), orjson.dumps(docs[i : i + 30])) for i, d in enumerate(docs) if i % 30 == 0],
    )
    log = (tmp_path / "workers.log").open("wb")
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "services.cli", "enricher", "--workers", "2"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        seen: set[str] = set()
        while time.monotonic() < deadline and len(seen) < n:
            seen = {orjson.loads(v)["event_id"] for _, v in await read_all(topics[EVENTS])}
            await asyncio.sleep(0.5)
        assert seen == {d["event_id"] for d in docs}
        async with httpx.AsyncClient() as c:
            for port in (PORT, PORT + 1):
                r = await c.get(f"http://127.0.0.1:{port}/readyz", timeout=5)
                assert r.status_code == 200, (port, r.text)
        assigned = []
        async with httpx.AsyncClient() as c:
            for port in (PORT, PORT + 1):
                assigned.append(
                    (await c.get(f"http://127.0.0.1:{port}/readyz", timeout=5)).json()["assigned_partitions"]
                )
        assert all(a > 0 for a in assigned)  # the group gave both workers partitions
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        log.close()
    assert code == 0, (tmp_path / "workers.log").read_text()[-2000:]
