"""Running ``auditpipe`` commands and services as real processes for the tools' end-to-end tests (ports from
20300-20399, the tools' private range)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from tests.query_api.server import ROOT, free_port

CLI = [sys.executable, "-m", "services.cli"]


def port() -> int:
    return free_port(20300, 20399)


def base_env(**over: str) -> dict[str, str]:
    """The current environment without any AUDITPIPE_* variable (the shared stack's defaults apply),
    plus ``over``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUDITPIPE_")}
    for k in ("AUDITPIPE_KAFKA_BOOTSTRAP", "AUDITPIPE_CLICKHOUSE_URL"):
        if k in os.environ:
            env[k] = os.environ[k]
    env["COLUMNS"] = "200"
    env.update(over)
    return env


def cli(
    *args: str, env: dict[str, str], timeout: float = 60, input: str | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout, input=input
    )


@contextmanager
def service(args: list[str], env: dict[str, str], health: str) -> Iterator[subprocess.Popen]:
    """``auditpipe <args>`` in the background until it answers ``health`` with 200; stopped after."""
    proc = subprocess.Popen(
        [*CLI, *args], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 40
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{args} exited {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")
            try:
                if httpx.get(health, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{args} did not become healthy")
            time.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
