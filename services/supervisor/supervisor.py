"""``auditpipe run``: run ingest, enricher, sink, forwarder, query API and sealer as child processes.

A child that exits unexpectedly is restarted with exponential backoff (capped), and the restart is
logged. SIGTERM / SIGINT (Ctrl-C) forwards SIGTERM to every child, waits for them to finish their batch
(``grace_s``), then SIGKILLs stragglers. Pure bookkeeping (which child to restart when) is in
:class:`RestartPolicy`; the process handling is a thin shell around it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from auditpipe.backoff import Backoff
from services.common.logging import get_logger, log

logger = get_logger("auditpipe.supervisor")

DEFAULT_SERVICES = ("ingest", "enricher", "sink", "forwarder", "api", "seal")


@dataclass
class RestartPolicy:
    """Exponential backoff per child (the shared :class:`auditpipe.backoff.Backoff`); a child that stayed up
    ``stable_s`` starts again from ``base_s``. No jitter: each child is one process restarting alone, and
    an operator reading the log sees the delays double."""

    base_s: float = 0.5
    cap_s: float = 30.0
    stable_s: float = 60.0
    backoff: Backoff = field(init=False)

    def __post_init__(self) -> None:
        self.backoff = Backoff(initial_s=self.base_s, cap_s=self.cap_s, jitter="none")

    def next_delay(self, uptime_s: float) -> float:
        if uptime_s >= self.stable_s:
            self.backoff.reset()
        return self.backoff.next_delay()


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restart_at: float | None = None
    restarts: int = 0
    policy: RestartPolicy = field(default_factory=RestartPolicy)

    def start(self, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(self.argv, env=env, start_new_session=False)
        self.started_at = time.monotonic()
        self.restart_at = None
        log(logger, logging.INFO, "started", child=self.name, pid=self.proc.pid)


class Supervisor:
    def __init__(
        self,
        services: list[str],
        extra_env: dict[str, str] | None = None,
        grace_s: float = 30.0,
        status_file: str | None = None,
    ):
        self.children = [Child(s, [sys.executable, "-m", "services.cli", s]) for s in services]
        self.env = dict(os.environ, **(extra_env or {}))
        self.grace_s = grace_s
        self.status_file = status_file
        self._stop = False

    def write_status(self) -> None:
        """Write {child: {pid, restarts}} to ``status_file`` (atomically), for operators and tests."""
        if not self.status_file:
            return
        import json

        data = {
            c.name: {"pid": c.proc.pid if c.proc is not None else None, "restarts": c.restarts}
            for c in self.children
        }
        tmp = f"{self.status_file}.tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, self.status_file)

    def request_stop(self, *_: object) -> None:
        self._stop = True

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        for c in self.children:
            c.start(self.env)
        self.write_status()
        while not self._stop:
            now = time.monotonic()
            changed = False
            for c in self.children:
                if c.proc is not None and c.proc.poll() is not None:
                    code = c.proc.returncode
                    delay = c.policy.next_delay(now - c.started_at)
                    c.restart_at = now + delay
                    c.restarts += 1
                    log(
                        logger,
                        logging.WARNING,
                        "child exited; restarting",
                        child=c.name,
                        code=code,
                        restart_in_s=round(delay, 2),
                        restarts=c.restarts,
                    )
                    c.proc = None
                    changed = True
                elif c.proc is None and c.restart_at is not None and now >= c.restart_at:
                    c.start(self.env)
                    changed = True
            if changed:
                self.write_status()
            time.sleep(0.2)
        return self.shutdown()

    def shutdown(self) -> int:
        live = [c for c in self.children if c.proc is not None and c.proc.poll() is None]
        for c in live:
            c.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        deadline = time.monotonic() + self.grace_s
        for c in live:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                c.proc.wait(remaining)  # type: ignore[union-attr]
                log(logger, logging.INFO, "stopped", child=c.name, code=c.proc.returncode)  # type: ignore[union-attr]
            except subprocess.TimeoutExpired:
                c.proc.kill()  # type: ignore[union-attr]
                c.proc.wait()  # type: ignore[union-attr]
                log(logger, logging.WARNING, "killed after grace period", child=c.name)
        return 0
