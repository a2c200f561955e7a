"""Run the query API in its own process (uvicorn) on a port of the query-API range, for tests that need
a real server: memory of a streaming export, the browser tests."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from services.common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def free_port(lo: int = 19700, hi: int = 19799) -> int:
    for port in range(lo, hi + 1):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 19700-19799")


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITPIPE_")}
    env.update(
        AUDITPIPE_CLICKHOUSE_URL=settings.clickhouse_url,
        AUDITPIPE_CLICKHOUSE_DATABASE=settings.clickhouse_database,
        AUDITPIPE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
        AUDITPIPE_QUERY_API=json.dumps(settings.query_api.model_dump(mode="json")),
        AUDITPIPE_RETENTION__ARCHIVE_DIR=str(settings.retention.archive_dir),
    )
    return env


@contextmanager
def serve(settings: Settings, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """Start ``uvicorn services.query_api.main:create_app --factory``; yields (base URL, process)."""
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "services.query_api.main:create_app", "--factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
        cwd=ROOT,
        env=env_for(settings),
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"query API exited with {proc.returncode}")
            try:
                if httpx.get(base + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("query API did not start")
            time.sleep(0.1)
        yield base, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")
