"""Query API latency: ``python -m benchmarks.query [--iterations N] [--regenerate]``.

Fills ``bench_query`` with 10M events (skipped when already filled), starts the API in its own process
(uvicorn, port 19750) and measures p50/p95 through HTTP for the analyst's questions. For each question
the same SQL run directly against ClickHouse is the ceiling (the API can only add to it): the table
prints the API/ceiling ratio, and the direct time of the other de-duplication strategy (FINAL vs
LIMIT 1 BY event_id) to show which is faster.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx

from benchmarks.query.generate import generate
from services.common.clickhouse import make_client
from services.common.settings import QueryToken, load_settings
from services.query_api import query as Q
from services.query_api.auth import token_sha256

DB = "bench_query"
PORT = 19750
TOKEN = "bench-query-token"
ROOT = Path(__file__).resolve().parents[2]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def start_api(dedup: str) -> subprocess.Popen:
    s = load_settings()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITPIPE_")}
    tok = QueryToken(principal="bench", sha256=token_sha256(TOKEN), roles=["EventView"])
    env.update(
        AUDITPIPE_CLICKHOUSE_URL=s.clickhouse_url,
        AUDITPIPE_CLICKHOUSE_DATABASE=DB,
        AUDITPIPE_QUERY_API__TOKENS=json.dumps([tok.model_dump()]),
        AUDITPIPE_QUERY_API__DEDUP=dedup,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.query_api.main:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(PORT), "--log-level", "warning"],
        cwd=ROOT, env=env,
    )  # fmt: skip
    for _ in range(300):
        try:
            if httpx.get(f"http://127.0.0.1:{PORT}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("query API did not start")


def scenarios(now: datetime, deep_cursor: str | None) -> list[tuple[str, str, dict[str, Any]]]:
    iso = lambda d: (now - timedelta(days=d)).isoformat()  # noqa: E731
    return [
        ("org + last 24 h", "/api/events", {"org": "org-042", "since": iso(1)}),
        ("org + actor + 30 days", "/api/events", {"org": "org-042", "actor": "u-423", "since": iso(30)}),
        ("target id, 60 days (all orgs)", "/api/events", {"target_id": "tgt-4217", "since": iso(60)}),
        ("q rare word, 7 days (all orgs)", "/api/events", {"q": "worker-4213", "since": iso(7)}),
        ("q common word, 7 days (all orgs)", "/api/events", {"q": "rollback", "since": iso(7)}),
        ("q common word, 7 days, one org", "/api/events", {"org": "org-042", "q": "rollback", "since": iso(7)}),  # noqa: E501
        ("q rare word, 7 days, one org", "/api/events", {"org": "org-042", "q": "worker-4213", "since": iso(7)}),  # noqa: E501
        ("first page, org, 30 days", "/api/events", {"org": "org-042", "since": iso(30)}),
        ("deep page (page 40) via cursor", "/api/events", {"org": "org-042", "since": iso(30), "cursor": deep_cursor}),  # noqa: E501
        ("facets, org, 7 days", "/api/events/facets", {"org": "org-042", "since": iso(7)}),
    ]  # fmt: skip


def filters_of(params: dict[str, Any]) -> Q.Filters:
    return Q.Filters(
        since=datetime.fromisoformat(params["since"]) if "since" in params else None,
        org=params.get("org"),
        actor=params.get("actor"),
        target_id=params.get("target_id"),
        q=params.get("q"),
    )


def direct_sql(
    path: str, params: dict[str, Any], dedup: Q.Dedup | Literal["time"]
) -> tuple[str, dict[str, Any]]:
    f = filters_of(params)
    if dedup == "time":  # free text across orgs: events_by_time (0011), the route's first fetch
        key = Q.decode_cursor(params["cursor"], "occurred_at", "desc") if params.get("cursor") else None
        return Q.time_table_query(DB, f, Q.Scope(), "desc", 51 + 16, key, Q.SUMMARY_COLUMNS)
    if path.endswith("facets"):
        return Q.facets_query(DB, f, Q.Scope(), dedup)
    key = Q.decode_cursor(params["cursor"], "occurred_at", "desc") if params.get("cursor") else None
    # a target id: the API's first candidate window (events_by_target, 0010), as the route sends it
    window: int | None | Literal["off"] = 51 if f.target_id is not None else "off"
    return Q.page_query(DB, f, Q.Scope(), "occurred_at", "desc", 51, key, dedup, target_window=window)


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.query")
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--regenerate", action="store_true", help="drop and refill bench_query")
    args = ap.parse_args()
    settings = load_settings()
    ch = make_client(settings, send_receive_timeout=600)
    if args.regenerate:
        ch.command(f"DROP DATABASE IF EXISTS {DB} SYNC")
    t0 = time.monotonic()
    if generate(settings, DB):
        print(f"generated 10M events in {time.monotonic() - t0:.0f} s")
    # data are anchored at generation time: measure relative to the newest event
    now = ch.query(f"SELECT max(occurred_at) FROM {DB}.events").result_rows[0][0].replace(tzinfo=UTC)
    n_rows = ch.command(f"SELECT count() FROM {DB}.events")
    parts = ch.command(
        f"SELECT count() FROM system.parts WHERE database = '{DB}' AND table = 'events' AND active"
    )
    print(f"{DB}.events: {n_rows:,} rows ({parts} active parts), newest event {now:%Y-%m-%d %H:%M} UTC")

    # SIGTERM (e.g. `timeout`) unwinds through the finally below, so the API process is always stopped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    proc = start_api("auto")
    results = []
    plain_target: tuple[str, float, float] | None = None
    try:
        http = httpx.Client(base_url=f"http://127.0.0.1:{PORT}", headers={"Authorization": f"Bearer {TOKEN}"})
        # a cursor 40 pages (2,000 events) deep
        p: dict[str, Any] = {"org": "org-042", "since": (now - timedelta(days=30)).isoformat(), "limit": 50}
        for _ in range(39):
            p["cursor"] = http.get("/api/events", params=p, timeout=60).json()["next_cursor"]
        deep = p["cursor"]
        for name, path, params in scenarios(now, deep):
            params = {k: v for k, v in params.items() if v is not None}
            lat: list[float] = []
            rows = 0
            for i in range(args.iterations + 3):
                t = time.perf_counter()
                r = http.get(path, params=params, timeout=60)
                dt = time.perf_counter() - t
                r.raise_for_status()
                if i >= 3:
                    lat.append(dt * 1000)
                rows = len(r.json().get("events", [])) if path == "/api/events" else r.json()["total"]
            # ceiling: the SQL the API ran (same de-duplication choice), sent straight to ClickHouse;
            # then the other strategy, fewer runs (FINAL without an index can take seconds)
            chosen: Q.Dedup | Literal["time"] = Q.choose_dedup("auto", filters_of(params))
            other: Q.Dedup = "limit_by" if chosen == "final" else "final"
            if path == "/api/events" and Q.use_time_table(filters_of(params), Q.Scope(), "occurred_at"):
                # other = the plain query on events (LIMIT 1 BY, one query: the pre-0011 path)
                chosen, other = "time", "limit_by"
            direct: dict[str, list[float]] = {chosen: [], other: []}
            for dedup, runs in ((chosen, max(5, args.iterations // 2)), (other, 3)):
                sql, sp = direct_sql(path, params, dedup)
                for i in range(runs + 1):
                    t = time.perf_counter()
                    ch.query(sql, parameters=sp)
                    if i >= 1:
                        direct[dedup].append((time.perf_counter() - t) * 1000)
            results.append((name, rows, lat, direct, chosen, other))
            if params.get("target_id"):  # the same run without events_by_target (the plain query, pre-0010)
                sql, sp = Q.page_query(
                    DB, filters_of(params), Q.Scope(), "occurred_at", "desc", 51, None, chosen
                )
                plain = []
                for i in range(max(5, args.iterations // 2) + 1):
                    t = time.perf_counter()
                    ch.query(sql, parameters=sp)
                    if i >= 1:
                        plain.append((time.perf_counter() - t) * 1000)
                plain_target = (name, statistics.median(plain), pct(plain, 95))
    finally:
        proc.terminate()
        proc.wait(10)

    print()
    print(f"{'question (through the API)':<34} {'rows':>5} {'p50 ms':>7} {'p95 ms':>7} {'dedup':>8} "
          f"{'ceiling':>8} {'ratio':>6} {'other dedup':>16}  p95<150")  # fmt: skip
    for name, rows, lat, direct, chosen, other in results:
        p50, p95 = statistics.median(lat), pct(lat, 95)
        ceil = statistics.median(direct[chosen])
        oth = f"{other} {statistics.median(direct[other]):.0f}"
        ok = "ok" if p95 < 150 else "MISS"
        print(
            f"{name:<34} {rows:>5} {p50:>7.1f} {p95:>7.1f} {chosen:>8} {ceil:>8.1f} {p50 / ceil:>6.2f} {oth:>16}  {ok}"  # noqa: E501
        )
    if plain_target:
        name, p50, p95 = plain_target
        print(
            f"\n{name}, plain query on events without events_by_target (direct): p50 {p50:.1f}  p95 {p95:.1f}"
        )
    print("\nceiling = p50 of the same SQL sent straight to ClickHouse (no API); ratio = API p50 / ceiling;")
    print("other dedup = p50 of the same question with the other de-duplication strategy (direct);")
    print("dedup 'time' = answered from events_by_time (0011, free text across orgs; repeats skipped by the")
    print("API), its 'other' = the plain query on events with LIMIT 1 BY (the path before 0011)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
