"""The stack manager on its own ports and state folder: idempotent up, status, kill -9 recovery, down."""

from __future__ import annotations

import os
import signal
import socket
import time

import pytest

from services.common.clickhouse import make_client
from services.common.settings import load_settings
from services.common.stack.manager import CH_MARKER, KAFKA_MARKER, Stack
from services.common.stack.process import alive, read_pid


def free_ports(n: int) -> list[int]:
    """Ports nobody listens on now (so a concurrent run of this test cannot collide with this one)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


@pytest.mark.kafka
@pytest.mark.clickhouse
def test_up_twice_status_kill_and_recover_down(tmp_path) -> None:
    kafka, controller, ch = free_ports(3)
    s = load_settings(
        kafka_bootstrap=f"127.0.0.1:{kafka}",
        clickhouse_url=f"http://127.0.0.1:{ch}",
        stack={"state_dir": tmp_path / "stack", "kafka_controller_port": controller, "kafka_heap": "512m"},
    )
    stack = Stack(s)
    try:
        st = stack.up(timeout_s=180)
        assert all(c.healthy for c in st), st
        pids = {c.component: c.pid for c in st}
        st2 = stack.up(timeout_s=60)  # second up: nothing restarted
        assert {c.component: c.pid for c in st2} == pids
        versions = {c.component: c.version for c in st2}
        print(f"\nstack versions: {versions}")
        assert versions["kafka"].startswith("4.") and versions["clickhouse"].startswith("26.9")

        client = make_client(s)
        client.command("CREATE DATABASE IF NOT EXISTS keep")
        client.command("CREATE TABLE IF NOT EXISTS keep.t (x UInt32) ENGINE = MergeTree ORDER BY x")
        client.insert("keep.t", [[1], [2], [3]], column_names=["x"])

        for c in st2:
            os.kill(c.pid, signal.SIGKILL)
        time.sleep(1)
        assert not any(c.healthy for c in stack.status())

        st3 = stack.up(timeout_s=180)
        assert all(c.healthy for c in st3)
        assert make_client(s).query("SELECT sum(x) FROM keep.t").result_rows[0][0] == 6
    finally:
        stack.down()
    assert not alive(read_pid(stack.kdir / "pid"), KAFKA_MARKER)
    assert not alive(read_pid(stack.cdir / "pid"), CH_MARKER)
    assert all(c.pid is None for c in stack.status())
