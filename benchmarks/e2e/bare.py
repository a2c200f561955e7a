"""The bare chain of the end-to-end benchmark: the pipeline's topology without validation, enrichment,
de-duplication or anything else auditpipe adds — its ceiling on this machine, measured in the same run.

``python -m benchmarks.e2e.bare <role> ...``, one process per role, like the pipeline's services:

- ``http PORT TOPIC``: an HTTP server that answers ``202`` once the request body is on ``TOPIC`` (one
  record per request, acks=all) — the ingest's job minus auth, validation, stamping and envelopes per org;
- ``hop IN OUT``: consume ``IN``, split each record's JSON array into one record per event keyed by its
  ``event_id`` (with the times the table requires appended as constant bytes), one record batch per
  partition, commit after the acks — the enricher's job minus faust and the rules;
- ``sink TOPIC DATABASE``: consume ``TOPIC``, ``INSERT INTO <database>.events_input FORMAT
  JSONAsString`` per fetch (ClickHouse computes the same columns and side tables as for the sink), commit
  after the insert — the sink's job minus first-content-wins and dead letters;
- ``forward TOPIC URL``: consume ``TOPIC``, POST each fetch's records as HEC objects
  ``{"event":<record>}`` to ``URL``, commit after the 200 — the forwarder's job minus filters, mapping and
  retries.

Every role uses the project's producer and consumer settings (``services/common/kafka.py``).
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from datetime import UTC, datetime

import httpx
import orjson

from services.common.clickhouse import make_client
from services.common.kafka import make_consumer, make_producer
from services.common.settings import load_settings


async def http(port: int, topic: str) -> None:
    s = load_settings()
    producer = make_producer(s)
    await producer.start()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for h in head.decode("latin-1").split("\r\n")[1:]:
                    k, _, v = h.partition(":")
                    if k.strip().lower() == "content-length":
                        length = int(v.strip())
                body = await reader.readexactly(length) if length else b""
                if body:
                    await (await producer.send(topic, body))
                writer.write(b"HTTP/1.1 202 Accepted\r\ncontent-length: 2\r\n\r\n{}")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=64 * 1024 * 1024)
    async with server:
        await server.serve_forever()


async def hop(src: str, dst: str) -> None:
    s = load_settings()
    consumer = make_consumer(s, src, group_id=f"bare-hop-{src}", max_partition_fetch_bytes=8 << 20)
    producer = make_producer(s, linger_ms=0)
    await consumer.start()
    await producer.start()
    n = len(await producer.partitions_for(dst))
    now = datetime.now(UTC).isoformat().encode()
    tail = b',"received_at":"' + now + b'","enriched_at":"' + now + b'","content_hash":"' + b"0" * 64 + b'"}'
    while True:
        batch = await consumer.getmany(timeout_ms=200)
        if not batch:
            continue
        groups: dict[int, list[tuple[bytes, bytes]]] = {}
        for msgs in batch.values():
            for m in msgs:
                data = orjson.loads(m.value)
                for ev in data if isinstance(data, list) else [data]:
                    key = ev["event_id"].encode()
                    groups.setdefault(zlib.crc32(key) % n, []).append((key, orjson.dumps(ev)[:-1] + tail))
        futs = []
        for part, items in groups.items():
            b = producer.create_batch()
            for k, v in items:
                if b.append(key=k, value=v, timestamp=None, headers=[]) is None:
                    futs.append(await producer.send_batch(b, dst, partition=part))
                    b = producer.create_batch()
                    b.append(key=k, value=v, timestamp=None, headers=[])
            b.close()
            futs.append(await producer.send_batch(b, dst, partition=part))
        await asyncio.gather(*futs)
        await consumer.commit()


async def sink(topic: str, database: str) -> None:
    s = load_settings()
    consumer = make_consumer(s, topic, group_id=f"bare-sink-{topic}", max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    client = make_client(s, database=database, send_receive_timeout=120)
    while True:
        batch = await consumer.getmany(timeout_ms=1000, max_records=50_000)
        values = [m.value for msgs in batch.values() for m in msgs]
        if not values:
            continue
        body = b"\n".join(values)
        await asyncio.to_thread(client.raw_insert, f"{database}.events_input", None, body, fmt="JSONAsString")
        await consumer.commit()


async def forward(topic: str, url: str) -> None:
    s = load_settings()
    consumer = make_consumer(s, topic, group_id=f"bare-forward-{topic}", max_partition_fetch_bytes=8 << 20)
    await consumer.start()
    async with httpx.AsyncClient(timeout=60) as h:
        while True:
            batch = await consumer.getmany(timeout_ms=200, max_records=500)
            values = [m.value for msgs in batch.values() for m in msgs]
            if not values:
                continue
            body = b"".join(b'{"event":' + v + b"}" for v in values)
            r = await h.post(url, content=body)
            r.raise_for_status()
            await consumer.commit()


def main() -> None:
    role, *args = sys.argv[1:]
    if role == "http":
        asyncio.run(http(int(args[0]), args[1]))
    elif role == "hop":
        asyncio.run(hop(args[0], args[1]))
    elif role == "sink":
        asyncio.run(sink(args[0], args[1]))
    elif role == "forward":
        asyncio.run(forward(args[0], args[1]))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
