"""``auditpipe events search|get|tail|export``: the audit log from a terminal, through the query API.

The filters are the viewer's (``--action``, ``--actor``, ``--since 7d`` …; repeat a flag or separate
values with commas for "any of"). Output is a table sized to the terminal by default, ``--json`` or
``--csv`` for programs; progress (export) goes to stderr and only on a terminal. Errors are one line on
stderr with an exit code per kind of failure (services/tools/api_client.py, docs/cli.md).

The user's token comes from ``AUDITPIPE_CLI__TOKEN`` or the token file (``AUDITPIPE_CLI__TOKEN_FILE``,
default ``~/.config/auditpipe/token``); the API address from ``AUDITPIPE_CLI__API_URL`` (default: the
local query API's host and port from the settings).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.common.errors import CliError
from services.common.settings import get_settings
from services.tools.api_client import EXIT_USAGE, QueryApi
from services.tools.table import Column, clean, fit, format_line, header, render, terminal_width
from services.tools.when import WhenError, parse_duration, parse_when

# flag -> (API parameter, many values?)
FILTERS: dict[str, tuple[str, bool]] = {
    "org": ("org", False),
    "action": ("action", True),
    "event_type": ("event_type", True),
    "target_type": ("target_type", True),
    "target_id": ("target_id", False),
    "actor": ("actor", False),
    "actor_type": ("actor_type", True),
    "source": ("source", True),
    "project": ("project", True),
    "environment": ("environment", True),
    "status": ("status", True),
    "ip": ("ip", False),
    "text": ("q", False),
}
PAGE_MAX = 500
CSV_COLUMNS = [
    "event_id",
    "occurred_at",
    "org_id",
    "project_id",
    "environment_id",
    "action",
    "event_type",
    "target_type",
    "target_id",
    "target_name",
    "actor_type",
    "actor_id",
    "actor_name",
    "actor_email",
    "source",
    "status",
    "client_ip",
    "change",
]


def filter_params(args: argparse.Namespace, now: datetime, with_time: bool = True) -> list[tuple[str, str]]:
    """The query-string pairs of the filter flags (pure apart from ``now``)."""
    out: list[tuple[str, str]] = []
    for flag, (param, many) in FILTERS.items():
        values = getattr(args, flag, None)
        if not values:
            continue
        if many:
            for v in values:
                out += [(param, x.strip()) for x in v.split(",") if x.strip()]
        else:
            out.append((param, values))
    if getattr(args, "triggers", False):
        out.append(("triggers", "true"))
    if with_time:
        for flag, direction in (("since", -1), ("until", -1)):
            text = getattr(args, flag, None)
            if text:
                try:
                    out.append((flag, parse_when(text, now, direction).isoformat()))
                except WhenError as e:
                    raise CliError(f"--{flag}: {e}", EXIT_USAGE) from None
    return out


def _time(iso_text: str | None) -> str:
    """``2026-03-01T08:00:01.123Z`` -> ``2026-03-01 08:00:01`` (UTC)."""
    return (iso_text or "").replace("T", " ")[:19]


def _actor(e: dict[str, Any]) -> str:
    if e.get("actor_type") == "system":
        return "system"
    return e.get("actor_name") or e.get("actor_id") or e.get("actor_email") or "?"


def _target(e: dict[str, Any]) -> str:
    ident = e.get("target_id") or e.get("target_name") or ""
    return f"{e.get('target_type') or '?'} {ident}".strip()


EVENT_COLUMNS = [
    Column("TIME (UTC)"),
    Column("ACTION", flexible=True, minimum=12, shrink=4),
    Column("TARGET", flexible=True, minimum=12, shrink=2),
    Column("ACTOR", flexible=True, minimum=10, shrink=3),
    Column("SOURCE", minimum=6),
    Column("STATUS", right=True),
    Column("CLIENT IP", flexible=True, minimum=9, shrink=1),
    Column("CHANGE", flexible=True, minimum=8, shrink=0),
]


def event_row(e: dict[str, Any]) -> list[str]:
    return [
        _time(e.get("occurred_at")),
        e.get("action") or "",
        _target(e),
        _actor(e),
        e.get("source") or "",
        str(e.get("status") or ""),
        e.get("client_ip") or "",
        e.get("change") or "",
    ]


def csv_cell(v: Any) -> str:
    """A CSV cell a spreadsheet will not run as a formula (a leading = + - @ tab or CR gets a quote)."""
    s = "" if v is None else str(v)
    return "'" + s if s[:1] in ("=", "+", "-", "@", "\t", "\r") else s


def write_events(events: list[dict[str, Any]], fmt: str, out: Any = None) -> None:
    out = out or sys.stdout
    if fmt == "json":
        out.write(json.dumps(events, indent=2, ensure_ascii=False) + "\n")
    elif fmt == "jsonl":
        for e in events:
            out.write(json.dumps(e, ensure_ascii=False) + "\n")
    elif fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(CSV_COLUMNS)
        for e in events:
            w.writerow([csv_cell(e.get(c)) for c in CSV_COLUMNS])
        out.write(buf.getvalue())
    else:
        out.write(render(EVENT_COLUMNS, [event_row(e) for e in events], terminal_width()) + "\n")
    out.flush()


def pages(api: QueryApi, params: list[tuple[str, str]], limit: int | None) -> Iterator[dict[str, Any]]:
    """Events in page order, following the API's keyset cursor, until ``limit`` (None: all)."""
    cursor: str | None = None
    got = 0
    while True:
        size = PAGE_MAX if limit is None else min(PAGE_MAX, limit - got)
        q = [*params, ("limit", str(size))] + ([("cursor", cursor)] if cursor else [])
        body = api.get("/api/events", q)
        for e in body["events"]:
            yield e
            got += 1
        cursor = body.get("next_cursor")
        if not cursor or (limit is not None and got >= limit):
            return


def _fmt(args: argparse.Namespace) -> str:
    return "json" if args.json else "csv" if getattr(args, "csv", False) else "table"


def _search(args: argparse.Namespace) -> int:
    s = get_settings()
    params = filter_params(args, datetime.now(UTC))
    params += [("sort", args.sort), ("order", args.order)]
    with QueryApi(s) as api:
        events = list(pages(api, params, None if args.limit == 0 else args.limit))
    fmt = _fmt(args)
    if not events and fmt == "table":
        print("no events match", file=sys.stderr)
        return 0
    write_events(events, fmt)
    return 0


def _get(args: argparse.Namespace) -> int:
    s = get_settings()
    with QueryApi(s) as api:
        raw = api.get_bytes(
            f"/api/events/{args.event_id}", what=f"event {args.event_id} (or your token may not see it)"
        )
    if args.json:
        sys.stdout.write(raw.decode("utf-8") + "\n")
        return 0
    print(describe_event(json.loads(raw)))
    return 0


def _value(v: Any) -> str:
    return clean(v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, sort_keys=True))


def describe_event(ev: dict[str, Any]) -> str:
    """One event for a person: the facts first, then the before/after of each change."""
    actor = ev.get("actor") or {}
    target = ev.get("target") or {}
    req = ev.get("request") or {}
    who = actor.get("name") or actor.get("id") or "?"
    if actor.get("email"):
        who += f" <{actor['email']}>"
    who += f" ({actor.get('type')}{' ' + actor['id'] if actor.get('id') and actor.get('name') else ''})"
    where = " / ".join(
        f"{k} {ev[f]}" for k, f in (("org", "org_id"), ("project", "project_id"), ("env", "environment_id"))
        if ev.get(f)
    )  # fmt: skip
    lines = [
        ("event", ev.get("event_id")),
        ("time", f"{_time(ev.get('occurred_at'))} UTC (received {_time(ev.get('received_at'))})"),
        ("where", where),
        ("action", f"{ev.get('action')} ({ev.get('event_type')})"),
        ("target", f"{target.get('type')} {target.get('id') or ''} {target.get('name') or ''}".strip()),
        ("actor", who),
        ("source", ev.get("source")),
        ("status", ev.get("status")),
        ("client ip", ev.get("client_ip")),
        ("change", ev.get("change")),
        ("request", f"{req.get('method') or ''} {req.get('path') or ''}".strip()),
        ("user agent", req.get("user_agent")),
        ("producer", ev.get("producer")),
        ("hidden", ", ".join(ev.get("sensitive_paths") or [])),
        ("hash", ev.get("content_hash")),
    ]  # fmt: skip
    out = [f"{k:<11} {clean(v)}" for k, v in lines if v]
    changes = ev.get("changes") or []
    if changes:
        out += ["", "changes:"]
        rows = [[c.get("field", ""), _value(c.get("before")), _value(c.get("after"))] for c in changes]
        cols = [Column("FIELD"), Column("BEFORE", flexible=True), Column("AFTER", flexible=True)]
        out.append(render(cols, rows, terminal_width()))
    return "\n".join(out)


def follow(
    api: QueryApi,
    params: list[tuple[str, str]],
    start: datetime,
    seen: dict[str, datetime],
    lookback: timedelta,
    interval_s: float,
    emit: Callable[[dict[str, Any]], None],
    stop: Callable[[], bool],
) -> None:
    """Print events as they are stored, oldest first, each exactly once.

    Each poll reads, in time order and through the API's cursor, every matching event since the newest
    one printed minus ``lookback`` (an event stored late, within that margin, still shows), and skips
    the ids already printed; ids older than the window are forgotten, so memory stays bounded.
    """
    high = start
    while not stop():
        since = high - lookback
        q = [*params, ("since", since.isoformat()), ("sort", "occurred_at"), ("order", "asc")]
        for e in pages(api, q, None):
            eid = e["event_id"]
            if eid in seen:
                continue
            t = datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00"))
            seen[eid] = t
            high = max(high, t)
            emit(e)
        floor = high - lookback
        for eid in [k for k, t in seen.items() if t < floor]:
            del seen[eid]
        deadline = time.monotonic() + interval_s
        while not stop() and time.monotonic() < deadline:
            time.sleep(0.05)


def _tail(args: argparse.Namespace) -> int:
    s = get_settings()
    now = datetime.now(UTC)
    params = filter_params(args, now, with_time=False)
    lookback = parse_duration(args.lookback)
    if lookback is None:
        raise CliError("--lookback: a duration such as 2m or 30s", EXIT_USAGE)
    fmt = "jsonl" if args.json else "table"
    # a followed table cannot be sized to rows not seen yet: typical widths, shrunk to the terminal
    typical = [
        ["2026-01-01 00:00:00", "x" * 22, "x" * 26, "x" * 18, "console", "201", "203.0.113.255", "x" * 40]
    ]
    widths = fit(EVENT_COLUMNS, typical, terminal_width())

    def emit(e: dict[str, Any]) -> None:
        if fmt == "jsonl":
            sys.stdout.write(json.dumps(e, ensure_ascii=False) + "\n")
        else:
            sys.stdout.write(format_line(EVENT_COLUMNS, widths, event_row(e)) + "\n")
        sys.stdout.flush()

    with QueryApi(s) as api:
        newest = [*params, ("sort", "occurred_at"), ("order", "desc")]
        last = list(pages(api, newest, args.lines)) if args.lines > 0 else []
        last.reverse()
        if fmt == "table":
            sys.stdout.write(header(EVENT_COLUMNS, widths) + "\n")
        for e in last:
            emit(e)
        if not args.follow:
            return 0
        seen = {e["event_id"]: datetime.fromisoformat(e["occurred_at"].replace("Z", "+00:00")) for e in last}
        start = max(seen.values(), default=now)
        stopping = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stopping.update(now=True))
        follow(api, params, start, seen, lookback, args.interval, emit, lambda: stopping["now"])
    return 0


def _export(args: argparse.Namespace) -> int:
    from services.common.progress import bar

    s = get_settings()
    params = filter_params(args, datetime.now(UTC))
    force = True if args.progress else False if args.no_progress else None
    target = Path(args.output) if args.output and args.output != "-" else None
    with QueryApi(s) as api:
        total = int(api.get("/api/events/facets", params).get("total", 0))
        q = [*params, ("format", args.format), ("sort", args.sort), ("order", args.order)]
        part = target.with_name(target.name + ".part") if target else None
        out = open(part, "wb") if part else sys.stdout.buffer  # noqa: SIM115 - closed below
        rows = 0
        size = 0
        try:
            with (
                bar(total, desc="export", unit="ev", force=force) as pb,
                api.stream("/api/events/export", q) as r,
            ):
                header = args.format == "csv"
                for chunk in r.iter_bytes():
                    out.write(chunk)
                    size += len(chunk)
                    n = chunk.count(b"\n")
                    if header and n:
                        n -= 1
                        header = False
                    rows += n
                    pb.update(n)
            out.flush()
        except BaseException:
            if part:
                out.close()
                part.unlink(missing_ok=True)
            raise
        if part and target:
            out.close()
            os.replace(part, target)
    where = str(target) if target else "stdout"
    unit = "events" if args.format == "jsonl" else "lines"
    print(f"exported {rows:,} {unit} ({size / 1024:,.0f} KiB) to {where}", file=sys.stderr)
    return 0


def _add_filters(p: argparse.ArgumentParser, with_time: bool = True) -> None:
    g = p.add_argument_group("filters (the viewer's; repeat a flag or use commas for 'any of')")
    if with_time:
        g.add_argument("--since", help="from: a duration back from now (7d, 12h) or an ISO time")
        g.add_argument("--until", help="until (exclusive): a duration back from now or an ISO time")
    g.add_argument("--org", help="organisation id")
    g.add_argument("--action", action="append", help="e.g. deployment:create")
    g.add_argument("--event-type", dest="event_type", action="append", help="create, update, delete…")
    g.add_argument("--target-type", dest="target_type", action="append", help="e.g. environment")
    g.add_argument("--target-id", dest="target_id", help="one target id")
    g.add_argument("--actor", help="actor id or name, or 'system'")
    g.add_argument(
        "--actor-type", dest="actor_type", action="append", help="user, api_token, service, system"
    )
    g.add_argument("--source", action="append", help="console, api, cli, terraform, git, webhook…")
    g.add_argument("--project", action="append")
    g.add_argument("--environment", action="append")
    g.add_argument("--status", action="append", help="HTTP status, e.g. 403")
    g.add_argument("--ip", help="client IP or CIDR")
    g.add_argument("-q", "--text", help="text in target id/name, action or change (any case)")
    g.add_argument(
        "--triggers", action="store_true", help="only triggers and webhooks (no person started it)"
    )


def _add_sort(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sort", choices=["occurred_at", "action", "target_type", "actor"], default="occurred_at")
    p.add_argument("--order", choices=["desc", "asc"], default="desc")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "events",
        help="search, show, follow and export audit events (through the query API)",
        description="The audit log from a terminal. Token: AUDITPIPE_CLI__TOKEN or "
        "~/.config/auditpipe/token; API: AUDITPIPE_CLI__API_URL. Exit codes: 1 API failure, "
        "2 bad input, 3 not authenticated, "
        "4 not allowed, 5 not found, 6 API unreachable.",
    )
    esub = p.add_subparsers(dest="events_cmd", required=True)

    s = esub.add_parser("search", help="events matching the filters, newest first")
    _add_filters(s)
    _add_sort(s)
    s.add_argument("-n", "--limit", type=int, default=50, help="how many (0 = all; default 50)")
    fmt = s.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="a JSON array of the listing fields")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    s.set_defaults(func=_search)

    g = esub.add_parser("get", help="one event in full, with the before/after of its changes")
    g.add_argument("event_id")
    g.add_argument("--json", action="store_true", help="the stored event exactly as the API returns it")
    g.set_defaults(func=_get)

    t = esub.add_parser("tail", help="the latest events, oldest first; -f keeps following")
    _add_filters(t, with_time=False)
    t.add_argument("-n", "--lines", type=int, default=10, help="how many to show first (default 10)")
    t.add_argument("-f", "--follow", action="store_true", help="keep printing new events (Ctrl-C stops)")
    t.add_argument("--interval", type=float, default=2.0, help="seconds between polls when following")
    t.add_argument(
        "--lookback", default="2m", help="how late an event may be stored and still be shown (default 2m)"
    )
    t.add_argument("--json", action="store_true", help="one JSON object per line")
    t.set_defaults(func=_tail)

    x = esub.add_parser("export", help="every matching event as CSV or JSON lines, with a progress bar")
    _add_filters(x)
    _add_sort(x)
    x.add_argument("--format", choices=["csv", "jsonl"], default="jsonl")
    x.add_argument("-o", "--output", help="file to write (default: stdout); written whole or not at all")
    pg = x.add_mutually_exclusive_group()
    pg.add_argument("--progress", action="store_true", help="show the progress bar even when not a terminal")
    pg.add_argument("--no-progress", action="store_true", help="never show the progress bar")
    x.set_defaults(func=_export)
