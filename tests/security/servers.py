"""Real uvicorn processes of the ingest and the query API (``auditpipe ingest`` / ``auditpipe api``) for
the hardening tests: headers, fuzzing, overload. Ports come from this suite's private range (20200-20299);
run the tests under ``flock /tmp/auditpipe-private-ports.lock``."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]

INGEST_TOKEN = "ingest-fuzz-token-0123456789"
# query tokens: name -> (token, QueryToken fields)
QUERY_TOKENS = {
    "viewer": ("viewer-token-0123456789", {"roles": ["EventView"]}),
    "manager": ("manager-token-0123456789", {"roles": ["EventView", "Manager"]}),
}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class Server:
    url: str
    proc: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def base_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITPIPE_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update(extra)
    return env


@contextmanager
def serve(command: str, port: int, env: dict[str, str], ready: str = "/healthz") -> Iterator[Server]:
    """``python -m services.cli <command> --port <port>`` until the block ends (SIGTERM, then kill)."""
    fd, name = tempfile.mkstemp(prefix=f"{command}-", suffix=".log")
    os.close(fd)
    log = Path(name)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", command, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = Server(f"http://127.0.0.1:{port}", proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(server.url + ready, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{command} did not start: {server.log_text()[-2000:]}")
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.unlink(missing_ok=True)


def ingest_env(bootstrap: str, topic: str, **extra: str) -> dict[str, str]:
    tokens = [{"producer": "fuzz", "sha256": sha(INGEST_TOKEN), "orgs": ["*"]}]
    return base_env(
        AUDITPIPE_KAFKA_BOOTSTRAP=bootstrap,
        AUDITPIPE_INGEST__TOPIC=topic,
        AUDITPIPE_INGEST__TOKENS=json.dumps(tokens),
        AUDITPIPE_LOG_LEVEL="WARNING",
        **extra,
    )


def query_env(bootstrap: str, clickhouse_url: str, database: str, audit_topic: str, archives: Path,
              tokens: dict[str, tuple[str, dict]] | None = None, **extra: str) -> dict[str, str]:  # fmt: skip
    """The query API's environment; ``tokens`` (name -> (token, fields)) default to QUERY_TOKENS."""
    tokens = [{"principal": k, "sha256": sha(t), **kw} for k, (t, kw) in (tokens or QUERY_TOKENS).items()]
    return base_env(
        AUDITPIPE_KAFKA_BOOTSTRAP=bootstrap,
        AUDITPIPE_CLICKHOUSE_URL=clickhouse_url,
        AUDITPIPE_CLICKHOUSE_DATABASE=database,
        AUDITPIPE_QUERY_API__TOKENS=json.dumps(tokens),
        AUDITPIPE_QUERY_API__AUDIT_TOPIC=audit_topic,
        AUDITPIPE_QUERY_API__SWITCH_TOPIC=audit_topic + ".switch",
        AUDITPIPE_RETENTION__ARCHIVE_DIR=str(archives),
        AUDITPIPE_LOG_LEVEL="WARNING",
        **extra,
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
