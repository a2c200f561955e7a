"""``python -m benchmarks.tools``: what the tools add on the services' hot paths, per call.

1. Token lookup: the ingest and the query API ask the token store for the current tokens on every
   request (settings tokens plus the tokens file, re-read only when it changed). Ceiling: the one
   ``os.stat`` of the file that the check needs anyway.
2. Middleware naming: ``AuditMiddleware.build`` for a call to a nested FastAPI route (template rebuilt
   through an included router's prefix, named from the route) and for a call no route matched (the URL
   heuristic). Ceiling: validating the same event document against the contract (``RawEvent``), the
   work every event costs anyway.

CPU-µs per call of this process (``benchmarks.measure``), medians of 3 runs, ratio to the ceiling
measured in the same run. No server is involved: both run inside the host process.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from benchmarks.measure import CpuMeter, median, ratio
from schemas.events_v1 import RawEvent
from services.common import tokens as T
from services.common.settings import load_settings


def cpu_us(fn: Any, n: int) -> float:
    meter = CpuMeter({"bench": os.getpid()}).start()
    for _ in range(n):
        fn()
    meter.stop()
    return meter.us_per_event(n)["bench"]


def token_lookup(n: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "tokens.json"
        with T.locked(path) as content:
            for i in range(100):  # a realistic file: 100 tokens
                content.tokens.append(
                    T.StoredQueryToken(
                        id=T.new_id(),
                        principal=f"p{i}",
                        sha256=T.hash_secret(str(i)),
                        created_at=datetime.now(UTC),
                        created_by="bench",
                    )
                )
        store = T.TokenStore(load_settings().model_copy(update={"tokens_file": path}))
        store.query()
        return cpu_us(store.query, n), cpu_us(lambda: os.stat(path), n)


def captured_scopes() -> list[tuple[dict, Any]]:
    """The ASGI scope of a nested-route call and of an unmatched call, as the middleware sees them after
    the app ran, plus the middleware instance."""
    from fastapi import APIRouter, FastAPI

    from auditpipe.middleware import AuditMiddleware

    class Keep:
        def prepare(self, ev: RawEvent) -> RawEvent:
            return ev

        async def emit_prepared(self, ev: RawEvent) -> None:
            return None

    envs = APIRouter()

    @envs.patch("/{environment_id}")
    async def patch_env(project_id: str, environment_id: str) -> dict:
        return {}

    projects = APIRouter(prefix="/projects/{project_id}")
    projects.include_router(envs, prefix="/environments")
    app = FastAPI()
    app.include_router(projects, prefix="/api")
    seen: list[dict] = []

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        if scope["type"] == "http":
            seen.append(dict(scope))

    mw = AuditMiddleware(spy, client=Keep(), org_id="org-acme")

    async def go() -> None:
        transport = httpx.ASGITransport(app=mw, client=("10.0.3.2", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
            hdrs = {"x-forwarded-for": "203.0.113.9, 10.0.0.7", "user-agent": "bench/1"}
            await http.patch("/api/projects/p1/environments/env-dev", json={"name": "Dev"}, headers=hdrs)
            await http.patch("/nowhere/p1/things/t-1", json={"name": "Dev"}, headers=hdrs)

    asyncio.run(go())
    return [(seen[0], mw), (seen[1], mw)]


def naming(n: int) -> tuple[float, float, float]:
    (routed, mw), (unrouted, _) = captured_scopes()
    now = datetime.now(UTC)
    body = b'{"name": "Dev"}'
    ev = mw.build(routed, now, body, len(body), 200)
    assert ev is not None and ev.action == "environment:update", ev
    doc = ev.model_dump(exclude_none=True)
    return (
        cpu_us(lambda: mw.build(routed, now, body, len(body), 200), n),
        cpu_us(lambda: mw.build(unrouted, now, body, len(body), 404), n),
        cpu_us(lambda: RawEvent.model_validate(doc), n),
    )


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tools")
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    tok = [token_lookup(args.calls) for _ in range(args.runs)]
    nam = [naming(args.calls) for _ in range(args.runs)]
    t_store, t_stat = median(x[0] for x in tok), median(x[1] for x in tok)
    n_route, n_url, n_ceiling = (median(x[i] for x in nam) for i in range(3))
    print(f"tools on the hot path: CPU-µs per call, medians of {args.runs} runs of {args.calls:,} calls\n")
    print("| what | CPU-µs per call | ceiling | ceiling µs | ratio |")
    print("|---|---|---|---|---|")
    print(
        f"| token store lookup (100 file tokens + settings) | {t_store:.2f} | os.stat of the file | "
        f"{t_stat:.2f} | {ratio(t_store, t_stat):.2f} |"
    )
    print(
        f"| middleware build, nested FastAPI route | {n_route:.1f} | RawEvent validation of the event | "
        f"{n_ceiling:.1f} | {ratio(n_route, n_ceiling):.2f} |"
    )
    print(
        f"| middleware build, no route (URL heuristic) | {n_url:.1f} | RawEvent validation of the event | "
        f"{n_ceiling:.1f} | {ratio(n_url, n_ceiling):.2f} |"
    )
    print(f"\nload average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
