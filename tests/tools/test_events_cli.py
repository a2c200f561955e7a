"""``auditpipe events search|get|tail|export`` end to end: the CLI as a process against a real query API
(uvicorn process) over a real ClickHouse database. Output formats, paging through the cursor, following
new events without duplicates, the export's file and progress bar, and one line plus a mapped exit code
for every kind of failure."""

from __future__ import annotations

import csv
import io
import json
import os
import queue
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.query_api.conftest import NOW, TOKENS, make_event
from tests.query_api.server import serve
from tests.tools.helpers import CLI, ROOT, base_env, cli, port

pytestmark = [pytest.mark.clickhouse, pytest.mark.e2e]

VIEWER = TOKENS["viewer"][0]


def events(n: int) -> list:
    out = []
    for i in range(n):
        kind = i % 4
        out.append(
            make_event(
                i,
                occurred_at=NOW - timedelta(minutes=i, seconds=30),
                action=["deployment:create", "environment:update", "variable:update", "service:restart"][
                    kind
                ],
                target={"type": ["deployment", "environment", "variable", "service"][kind], "id": f"t-{i}"},
                status=[201, 200, 403, 409][kind],
                org_id="org-acme" if i % 5 else "org-beta",
                change='=HYPERLINK("http://evil")' if i == 3 else f"change number {i} " + "x" * (i % 50),
            )
        )
    return out


@pytest.fixture
def api(api_settings, insert):  # noqa: ANN001, ANN201
    evs = events(620)
    insert(evs)
    with serve(api_settings, port=port()) as (base, _):
        env = base_env(AUDITPIPE_CLI__API_URL=base, AUDITPIPE_CLI__TOKEN=VIEWER, COLUMNS="120")
        yield base, env, evs, insert


def test_search_table_json_csv_and_paging(api) -> None:  # noqa: ANN001
    base, env, evs, _ = api
    r = cli("events", "search", env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.rstrip("\n").split("\n")
    assert lines[0].startswith("TIME (UTC)") and len(lines) == 2 + 50
    assert all(len(x) <= 120 for x in lines), max(map(len, lines))  # fits the terminal width
    assert "deployment:create" in r.stdout and "…" in r.stdout  # long changes are cut, not wrapped

    r = cli(
        "events",
        "search",
        "--action",
        "variable:update",
        "--status",
        "403",
        "--since",
        "1d",
        "-n",
        "0",
        "--json",
        env=env,
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    want = {str(e.event_id) for e in evs if e.action == "variable:update"}
    assert {e["event_id"] for e in got} == want and len(got) == len(want)

    r = cli("events", "search", "-n", "0", "--json", "--sort", "occurred_at", "--order", "asc", env=env)
    got = json.loads(r.stdout)
    assert len(got) == 620  # two pages of 500 through the API's cursor
    assert [e["occurred_at"] for e in got] == sorted(e["occurred_at"] for e in got)

    r = cli("events", "search", "--org", "org-beta", "--actor", "Ada Lovelace", "-n", "5", "--csv", env=env)
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0][:2] == ["event_id", "occurred_at"] and len(rows) == 6
    assert all(x[2] == "org-beta" for x in rows[1:])
    r = cli("events", "search", "-q", "hyperlink", "--csv", env=env)
    (row,) = list(csv.DictReader(io.StringIO(r.stdout)))
    assert row["change"].startswith("'=")  # a spreadsheet will not run it


def test_get_shows_the_event_and_its_changes(api) -> None:  # noqa: ANN001
    base, env, evs, _ = api
    ev = evs[7]
    r = cli("events", "get", str(ev.event_id), env=env)
    assert r.returncode == 0, r.stderr
    assert "service:restart" in r.stdout and "Ada Lovelace <ada@acme.test>" in r.stdout
    assert "FIELD" in r.stdout and "BEFORE" in r.stdout and "1.6" in r.stdout and "1.7" in r.stdout
    r = cli("events", "get", str(ev.event_id), "--json", env=env)
    assert json.loads(r.stdout)["event_id"] == str(ev.event_id)


@pytest.mark.parametrize(
    "args,over,code,text",
    [
        (["get", "00000000-0000-4000-8000-000000000000"], {}, 5, "not found (404)"),
        (["get", "EVENT0"], {"AUDITPIPE_CLI__TOKEN": TOKENS["acme"][0]}, 5, "not found (404)"),  # other org
        (["search"], {"AUDITPIPE_CLI__TOKEN": "wrong-token"}, 3, "not authenticated (401)"),
        (["search"], {"AUDITPIPE_CLI__TOKEN": TOKENS["norole"][0]}, 4, "not allowed (403)"),
        (["search", "--status", "999"], {}, 2, "invalid request (422): status"),
        (["search", "--ip", "not-an-ip"], {}, 2, "invalid request (422): ip"),
        (["search", "--since", "last tuesday"], {}, 2, "--since"),
        (["search"], {"AUDITPIPE_CLI__API_URL": "http://127.0.0.1:1"}, 6, "connection refused"),
        (["tail", "--lookback", "soon"], {}, 2, "--lookback"),
    ],
)
def test_failures_are_one_line_with_their_exit_code(api, args, over, code, text) -> None:  # noqa: ANN001
    base, env, evs, _ = api
    args = [str(evs[0].event_id) if a == "EVENT0" else a for a in args]
    r = cli("events", *args, env=dict(env, **over))
    assert r.returncode == code, (r.returncode, r.stderr)
    assert text in r.stderr and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stdout == ""


def test_token_from_a_private_file(api, tmp_path: Path) -> None:  # noqa: ANN001
    base, env, _, _ = api
    env = {k: v for k, v in env.items() if k != "AUDITPIPE_CLI__TOKEN"}
    f = tmp_path / "token"
    r = cli("events", "search", env=dict(env, AUDITPIPE_CLI__TOKEN_FILE=str(f)))
    assert r.returncode == 3 and "no query token" in r.stderr
    f.write_text(VIEWER + "\n")
    f.chmod(0o644)
    r = cli("events", "search", env=dict(env, AUDITPIPE_CLI__TOKEN_FILE=str(f)))
    assert r.returncode == 3 and "chmod 600" in r.stderr
    f.chmod(0o600)
    r = cli("events", "search", "-n", "3", "--json", env=dict(env, AUDITPIPE_CLI__TOKEN_FILE=str(f)))
    assert r.returncode == 0 and len(json.loads(r.stdout)) == 3


def test_tail_and_follow_print_each_new_event_once(api) -> None:  # noqa: ANN001
    base, env, evs, insert = api
    r = cli("events", "tail", "-n", "5", "--json", env=env)
    got = [json.loads(x) for x in r.stdout.splitlines()]
    newest = sorted(evs, key=lambda e: e.occurred_at)[-5:]
    assert [g["event_id"] for g in got] == [str(e.event_id) for e in newest]  # oldest first, like tail

    proc = subprocess.Popen(
        [*CLI, "events", "tail", "-f", "-n", "3", "--json", "--interval", "0.3",
         "--action", "deployment:create"],
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        lines: list[str] = []
        arrived: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [arrived.put(x) for x in proc.stdout], daemon=True).start()

        def read_until(n: int, timeout: float = 30) -> None:
            deadline = time.monotonic() + timeout
            while len(lines) < n and time.monotonic() < deadline:
                try:
                    lines.append(arrived.get(timeout=0.2))
                except queue.Empty:
                    continue

        read_until(3)
        assert len(lines) == 3
        t0 = NOW + timedelta(seconds=5)
        fresh = [make_event(1000 + i, occurred_at=t0 + timedelta(milliseconds=i % 2)) for i in range(6)]
        fresh.append(make_event(1100, action="variable:update", occurred_at=t0))  # filtered out
        insert(fresh[:3])
        read_until(6)
        insert(fresh[3:])
        # stored late: older than what was printed, within the lookback
        late = make_event(1200, occurred_at=t0 - timedelta(seconds=20))
        insert([late])
        insert(fresh[:2])  # a redelivery: same events again
        read_until(10, timeout=8)
        ids = [json.loads(x)["event_id"] for x in lines]
        assert len(ids) == len(set(ids)), "an event was printed twice"
        want = {str(e.event_id) for e in fresh if e.action == "deployment:create"} | {str(late.event_id)}
        assert want <= set(ids[3:]) and len(ids) == 3 + len(want)
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode in (0, -15)


def test_export_to_a_file_with_progress_and_to_stdout_without(api, tmp_path: Path) -> None:  # noqa: ANN001
    base, env, evs, _ = api
    out = tmp_path / "acme.jsonl"
    r = cli("events", "export", "--org", "org-acme", "-o", str(out), "--progress", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""  # the data went to the file, progress and summary to stderr
    acme = [e for e in evs if e.org_id == "org-acme"]
    lines = out.read_text().splitlines()
    assert {json.loads(x)["event_id"] for x in lines} == {str(e.event_id) for e in acme}
    assert "export" in r.stderr and f"{len(acme)}/{len(acme)}" in r.stderr.replace(",", "")
    assert f"exported {len(acme)} events" in r.stderr
    assert not any(p.name.endswith(".part") for p in tmp_path.iterdir())

    r = cli("events", "export", "--format", "csv", "--status", "409", env=env)  # not a terminal: no bar
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert (
        len(rows) == sum(1 for e in evs if e.status == 409) and "export" not in r.stderr.split("exported")[0]
    )
    assert os.path.getsize(out) > 0
