"""``python -m benchmarks.hardening``: what the hardening layers cost per request and per exported row.

Same run, same process, medians of ``--runs``:

1. HTTP layers: a minimal ASGI app answering 202 is called directly (no HTTP client, no server: only
   the layers' own CPU) ``--requests`` times, bare (the ceiling) and wrapped as the ingest and the query
   API wrap theirs (``SecurityHeaders(AdmissionLimiter(app))``), with and without the request deadline
   (the deadline runs the app in a task of its own). CPU-µs per request, and per event at the ingest's
   typical 500 events per request.
2. Export row counting: ``CsvRows.feed`` over a CSV body shaped like the query API's export (quoted
   cells, some with line breaks), in 256 KiB chunks as the export reads them, against the ceiling of a
   bare ``bytes.count(b"\\n")`` over the same chunks. CPU-µs per row and MB/s.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import io

from benchmarks.measure import median, ratio, self_cpu_s
from services.common.admission import AdmissionLimiter, Limits
from services.common.http_security import SecurityHeaders
from services.query_api.export import CsvRows

SCOPE = {
    "type": "http",
    "path": "/v1/events/batch",
    "method": "POST",
    "headers": [(b"content-length", b"500000")],
}
BODY = b'{"accepted":[]}'


async def app(scope, receive, send) -> None:  # noqa: ANN001
    await send(
        {"type": "http.response.start", "status": 202, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": BODY})


async def _receive() -> dict:
    return {"type": "http.request", "body": b"", "more_body": False}


async def _send(_message: dict) -> None:
    return None


async def _drive(asgi, n: int) -> float:  # noqa: ANN001
    t0 = self_cpu_s()
    for _ in range(n):
        await asgi(dict(SCOPE), _receive, _send)
    return (self_cpu_s() - t0) * 1e6 / n


def http_layers(n: int, runs: int) -> dict[str, float]:
    limits = Limits(64, 16 * 1024 * 1024, 5 * 1024 * 1024, None, 5)
    variants = {
        "bare app (ceiling)": app,
        "headers + admission": SecurityHeaders(AdmissionLimiter(app, service="ingest", limits=limits)),
        "headers + admission + deadline": SecurityHeaders(
            AdmissionLimiter(
                app, service="ingest", limits=Limits(64, 16 * 1024 * 1024, 5 * 1024 * 1024, 15.0, 5)
            )
        ),
    }
    out: dict[str, float] = {}
    for name, asgi in variants.items():
        out[name] = median(asyncio.run(_drive(asgi, n)) for _ in range(runs))
    return out


def csv_body(rows: int) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    w.writerow(["event_id", "occurred_at", "org_id", "action", "target_name", "change", "request_payload"])
    for i in range(rows):
        change = f'Deployed "release 1.{i}"\nto production' if i % 10 == 0 else f"Deployed release 1.{i}"
        w.writerow([f"e-{i:08d}", "2026-11-29T10:00:00.000Z", f"org-{i % 100}", "deployment:create",
                    f"web v1.{i}", change, f'{{"release":"1.{i}","environment":"production"}}'])  # fmt: skip
    return buf.getvalue().encode()


def count_rows(body: bytes, runs: int) -> tuple[float, float, float]:
    chunks = [body[i : i + 256 * 1024] for i in range(0, len(body), 256 * 1024)]

    def counted() -> float:
        t0 = self_cpu_s()
        c = CsvRows()
        for ch in chunks:
            c.feed(ch)
        return self_cpu_s() - t0

    def ceiling() -> float:
        t0 = self_cpu_s()
        n = 0
        for ch in chunks:
            n += ch.count(b"\n")
        return self_cpu_s() - t0

    return median(counted() for _ in range(runs)), median(ceiling() for _ in range(runs)), len(body) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=50_000)
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()

    layers = http_layers(args.requests, args.runs)
    base = layers["bare app (ceiling)"]
    print(f"HTTP layers, {args.requests} requests per run, median of {args.runs} (CPU-µs in this process):")
    print(f"  {'variant':<34} {'µs/request':>10} {'added':>8} {'µs/event@500':>13} {'ratio':>6}")
    for name, us in layers.items():
        print(f"  {name:<34} {us:>10.1f} {us - base:>8.1f} {us / 500:>13.3f} {ratio(us, base):>6.2f}")

    body = csv_body(args.rows)
    counted, ceiling, mb = count_rows(body, args.runs)
    print(
        f"\nExport row counting, {args.rows} CSV rows ({mb:.0f} MB) in 256 KiB chunks, median of {args.runs}:"
    )
    print(f"  CsvRows.feed        {counted * 1e6 / args.rows:6.3f} µs/row  {mb / counted:7.0f} MB/s")
    print(f"  bytes.count ceiling {ceiling * 1e6 / args.rows:6.3f} µs/row  {mb / ceiling:7.0f} MB/s  "
          f"ratio {ratio(counted, ceiling):.1f}")  # fmt: skip


if __name__ == "__main__":
    main()
