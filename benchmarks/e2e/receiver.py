"""``python -m benchmarks.e2e.receiver PORT``: a lean Splunk-HEC-style receiver for the end-to-end benchmark.

Accepts ``POST /services/collector/event`` (any body of concatenated ``{"time":…,"event":<record>}``
objects, or bare records), answers ``{"text":"Success","code":0}``, and counts what arrives per phase: the
org id prefix before the first ``-`` (``sust``, ``lat50``, ``bare``, …). For latency it keeps, per phase,
the seconds between each event's ``occurred_at`` (its send time) and its arrival. ``GET /stats`` returns
``{phase: {"count": n, "p50": s, "p99": s}}``; ``POST /reset`` clears everything.

Plain asyncio (HTTP/1.1, keep-alive): its own CPU stays out of the way of what is measured.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import sys
import time
from collections import defaultdict
from datetime import datetime

import orjson

COUNT: dict[str, int] = defaultdict(int)
LATENCY: dict[str, list[float]] = defaultdict(list)
# canonical records: top-level members in sorted order; the benchmark's events carry no nested copies
ORG = re.compile(rb'"occurred_at":"([^"]+)","org_id":"([a-z0-9]+)-')


def record(body: bytes) -> None:
    now = time.time()
    for m in ORG.finditer(body):
        phase = m.group(2).decode()
        COUNT[phase] += 1
        if phase != "sust" and phase != "bare":  # latency phases only: parsing costs CPU
            t = datetime.fromisoformat(m.group(1).decode().replace("Z", "+00:00")).timestamp()
            LATENCY[phase].append(now - t)


def stats() -> bytes:
    out = {}
    for phase, n in COUNT.items():
        lat = sorted(LATENCY.get(phase, []))
        q = statistics.quantiles(lat, n=100) if len(lat) >= 2 else [0.0] * 99
        out[phase] = {"count": n, "p50": q[49], "p99": q[98]}
    return orjson.dumps(out)


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            line, *headers = head.decode("latin-1").split("\r\n")
            method, path, _ = line.split(" ", 2)
            length = 0
            for h in headers:
                k, _, v = h.partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            body = await reader.readexactly(length) if length else b""
            if method == "POST" and path.startswith("/services/collector"):
                record(body)
                resp = b'{"text":"Success","code":0}'
            elif path == "/stats":
                resp = stats()
            elif method == "POST" and path == "/reset":
                COUNT.clear()
                LATENCY.clear()
                resp = b"{}"
            else:
                resp = b'{"status":"ok"}'
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
                + str(len(resp)).encode()
                + b"\r\n\r\n"
                + resp
            )
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port: int) -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=64 * 1024 * 1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
