"""Byte-identical output on reprocessing: the same raw records consumed by a second consumer group give
the same enriched records, byte for byte (tamper evidence seals these bytes)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest

from schemas.topics import DEADLETTER, EVENTS, RAW
from tests.enricher.helpers import EnricherProcess, enricher_env, produce, read_all

pytestmark = pytest.mark.kafka

PORT = 19512
EXAMPLES = Path(__file__).resolve().parents[2] / "schemas/examples/raw"


async def test_a_second_consumer_group_gets_byte_identical_records(topic_names, tmp_path: Path) -> None:  # noqa: ANN001
    topics = topic_names(RAW, EVENTS, DEADLETTER)
    second_events = topic_names(EVENTS)[EVENTS]
    examples = [orjson.loads(p.read_bytes()) for p in sorted(EXAMPLES.glob("*.json"))]
    records: list[tuple[bytes | None, bytes]] = []
    for i in range(40):
        # every other event without an id: derived from the record's coordinates (and envelope index)
        batch = [
            {**e, "metadata": {"i": str(i)}, **({"event_id": str(uuid.uuid4())} if j % 2 else {})}
            for j, e in enumerate(examples)
        ]
        records.append((str(i).encode(), orjson.dumps(batch)))  # envelopes
        single = {**batch[i % len(batch)], "event_id": str(uuid.uuid4())}
        records.append((None, orjson.dumps(single)))  # and single events
    await produce(topics[RAW], records)
    want = len(records) // 2 * (len(examples) + 1)

    async def run(events_topic: str, suffix: str, port: int) -> list[tuple[bytes | None, bytes | None]]:
        env = enricher_env(
            {**topics, EVENTS: events_topic}, suffix, port, AUDITPIPE_ENRICHER__HASH_MODE="indicator"
        )
        proc = EnricherProcess(env, tmp_path / f"enricher-{suffix}.log").start()
        try:
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                recs = await read_all(events_topic)
                if len({orjson.loads(v)["event_id"] for _, v in recs}) >= want:
                    return recs
                await asyncio.sleep(0.5)
            raise AssertionError(f"only {len(recs)} records of {want}: {proc.logs()[-1500:]}")
        finally:
            assert proc.stop() == 0

    first = await run(topics[EVENTS], uuid.uuid4().hex[:8], PORT)
    second = await run(second_events, uuid.uuid4().hex[:8], PORT + 1)
    a = {k: v for k, v in first}
    b = {k: v for k, v in second}
    assert len(a) == want and a == b  # same keys (event ids), same bytes
    assert any(b"[sensitive:salted-sha256:" in v for v in a.values())  # indicators too
