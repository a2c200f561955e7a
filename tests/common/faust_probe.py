"""A faust app that authenticates with ``services.common.kafka.faust_credentials`` (the enricher's mapping),
consumes the raw topic in the enricher's group and writes one record per message to the events topic;
it prints ``consumed <n>`` and exits once ``PROBE_EXPECT`` messages containing ``PROBE_MARKER`` went
through.

Run as a process (a faust App binds to its first event loop): ``python -m tests.common.faust_probe``,
settings from the ``AUDITPIPE_*`` environment.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import faust

from services.common.kafka import faust_credentials
from services.common.settings import load_settings


def main() -> int:
    s = load_settings()
    es = s.enricher
    expect = int(os.environ["PROBE_EXPECT"])
    marker = os.environ["PROBE_MARKER"].encode()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = faust.App(
        es.consumer_group,
        broker=[f"kafka://{b}" for b in s.bootstrap_servers],
        broker_credentials=faust_credentials(s),
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        store="memory://",
        datadir=str(es.data_dir),
        web_enabled=False,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
    )
    raw = app.topic(es.raw_topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    seen: list[bytes] = []

    @app.agent(raw)
    async def relay(stream: faust.StreamT) -> None:
        async for value in stream:
            await (await app.producer.send(es.events_topic, b"probe", value, None, None, None))
            if marker in value:
                seen.append(value)
            if len(seen) >= expect:
                print(f"consumed {len(seen)}", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)  # the worker's own graceful stop

    worker = faust.Worker(app, loop=loop, loglevel="WARNING", quiet=True)
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        return 0 if len(seen) >= expect else int(e.code or 1)
    return 0 if len(seen) >= expect else 1


if __name__ == "__main__":
    sys.exit(main())
